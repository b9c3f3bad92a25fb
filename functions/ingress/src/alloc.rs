//! Allocator tuning, so the memory of a message's parts goes back to the system when they are
//! uploaded.
//!
//! A session fills a buffer of one part (5 MiB), hands it to the spool, and starts a new one.
//! glibc serves allocations that large with their own `mmap` — until the first of them is
//! freed: it then raises its mmap threshold to that size (the "dynamic threshold"), so later
//! part buffers come from the heap, and a freed one stays resident there. Measured on one
//! 30 MB message: 13 MiB of growth instead of 7.6 MiB, and with 50 concurrent sessions every
//! session would keep a second, idle part. Fixing the threshold turns that off: every buffer
//! of 1 MiB or more is its own mapping, returned to the system when freed, and only the pages
//! a session has filled are resident. Other C libraries (musl) map large blocks anyway.

/// Allocations of this size and larger are always their own mapping.
const MMAP_THRESHOLD: i32 = 1024 * 1024;

/// Call once, at start, before the first message arrives.
pub fn return_part_buffers_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt is thread-safe and only changes allocator parameters. Its result (0 = not
    // applied) needs no handling: memory is still bounded without it, only less tightly.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}
