//! What the session and the spool exchange about a message's bytes: plain data, no I/O.
//!
//! A message that fits in one part is handed over whole at its end ([`Content::Whole`], one
//! PUT). A larger one is streamed: the session asks the shell to open a multipart upload, hands
//! it each full [`Part`] as it fills and keeps the [`PartTag`]s S3 answers, and at the end hands
//! over the tags and the last bytes ([`Content::Multipart`]) to complete the upload. An
//! [`Upload`] that will not be completed is aborted; the session says when.

/// A multipart upload S3 opened for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    pub queue_id: String,
    /// The object it will become (`spool/<queue id>.eml`).
    pub key: String,
    /// S3's upload id.
    pub id: String,
}

/// One full part of a message, to be uploaded to its open upload.
#[derive(Debug)]
pub struct Part {
    pub upload: Upload,
    /// From 1, in message order.
    pub number: i32,
    pub bytes: Vec<u8>,
}

/// What S3 answered for an uploaded part, needed to complete the upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartTag {
    pub number: i32,
    pub etag: String,
    /// The part's CRC32 as S3 computed it (base64), when it reports one; the upload is opened
    /// with CRC32 checksums, so completing it must name each part's.
    pub crc32: Option<String>,
}

/// A message object the spool wrote (one PUT, or a completed upload) and no job points at yet:
/// it can still be read back, replaced (with its header section edited) or withdrawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub key: String,
    /// The version written, in a versioned bucket.
    pub version: Option<String>,
    /// Bytes of the object.
    pub size: u64,
}

/// The stored bytes of a complete message.
#[derive(Debug)]
pub enum Content {
    /// The whole message (it fitted in one part): one PUT.
    Whole(Vec<u8>),
    /// The parts already uploaded, and the rest of the message as the last part.
    Multipart { upload: Upload, parts: Vec<PartTag>, last: Vec<u8> },
}

impl Content {
    /// The open upload these bytes belong to, if any (it must be completed or aborted).
    pub fn upload(&self) -> Option<&Upload> {
        match self {
            Content::Whole(_) => None,
            Content::Multipart { upload, .. } => Some(upload),
        }
    }
}
