//! Every reply the ingress sends, in one place, so the wording and the enhanced status codes of
//! the contract's error mapping can be read (and changed) together.

use shared::Reply;

pub fn greeting(host: &str) -> Reply {
    Reply::multi(220, None, vec![format!("{host} ESMTP ready")])
}
pub fn ok() -> Reply {
    Reply::new(250, "2.0.0", "Ok")
}
pub fn bye(host: &str) -> Reply {
    Reply::new(221, "2.0.0", format!("{host} closing connection"))
}
pub fn sender_ok() -> Reply {
    Reply::new(250, "2.1.0", "Sender ok")
}
pub fn rcpt_ok() -> Reply {
    Reply::new(250, "2.1.5", "Recipient ok")
}
pub fn start_data() -> Reply {
    Reply::multi(354, None, vec!["End data with <CR><LF>.<CR><LF>".into()])
}
pub fn queued(id: &str) -> Reply {
    Reply::new(250, "2.0.0", format!("Ok: queued as {id}"))
}
pub fn chunk_ok(n: usize) -> Reply {
    Reply::new(250, "2.0.0", format!("{n} octets received"))
}
pub fn vrfy() -> Reply {
    Reply::new(252, "2.0.0", "Cannot VRFY user, but will accept message and attempt delivery")
}
pub fn help() -> Reply {
    Reply::multi(
        214,
        Some("2.0.0"),
        vec![
            "Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY EXPN HELP STARTTLS AUTH".into(),
            "See RFC 5321; mail to <postmaster> is always accepted".into(),
        ],
    )
}
pub fn tls_ready() -> Reply {
    Reply::new(220, "2.0.0", "Ready to start TLS")
}
pub fn auth_ok() -> Reply {
    Reply::new(235, "2.7.0", "Authentication successful")
}
pub fn auth_challenge(b64: &str) -> Reply {
    Reply::multi(334, None, vec![b64.to_string()])
}

// Errors, following the contract's mapping.
/// To each recipient of a client the DNS blocklists list (see `screen`).
pub fn blocklisted(client: std::net::IpAddr, zone: &str) -> Reply {
    Reply::new(554, "5.7.1", format!("Service unavailable; client [{client}] blocked using {zone}"))
}
/// Instead of the greeting, to a client that talked before it (the pregreet test).
pub fn pregreet() -> Reply {
    Reply::new(554, "5.5.1", "Protocol error: talking before the greeting")
}
pub fn bad_sequence(what: &str) -> Reply {
    Reply::new(503, "5.5.1", format!("Bad sequence of commands: {what}"))
}
pub fn syntax(usage: &str) -> Reply {
    Reply::new(501, "5.5.4", format!("Syntax: {usage}"))
}
pub fn bad_address(what: &str) -> Reply {
    Reply::new(501, "5.1.3", format!("Bad address syntax: {what}"))
}
pub fn unknown_command() -> Reply {
    Reply::new(500, "5.5.2", "Command not recognized")
}
pub fn line_too_long() -> Reply {
    Reply::new(500, "5.5.2", "Line too long")
}
pub fn bare_cr_or_nul() -> Reply {
    Reply::new(500, "5.5.2", "Bare CR or NUL in command not allowed")
}
pub fn not_implemented(cmd: &str) -> Reply {
    Reply::new(502, "5.5.1", format!("{cmd} not implemented"))
}
pub fn unknown_param(p: &str) -> Reply {
    Reply::new(555, "5.5.4", format!("Unsupported parameter {p}"))
}
pub fn bad_param(p: &str) -> Reply {
    Reply::new(501, "5.5.4", format!("Invalid value for {p}"))
}
pub fn relay_denied() -> Reply {
    Reply::new(554, "5.7.1", "Relay access denied")
}
pub fn routing_denied() -> Reply {
    Reply::new(554, "5.7.1", "Sender-specified routing (%, ! or @ in local part) not allowed")
}
pub fn needs_smtputf8() -> Reply {
    Reply::new(553, "5.6.7", "Non-ASCII address requires SMTPUTF8")
}
pub fn too_many_recipients() -> Reply {
    Reply::new(452, "4.5.3", "Too many recipients")
}
pub fn no_valid_recipients() -> Reply {
    Reply::new(554, "5.5.1", "No valid recipients")
}
pub fn too_big() -> Reply {
    Reply::new(552, "5.3.4", "Message size exceeds fixed limit")
}
pub fn too_many_hops() -> Reply {
    Reply::new(554, "5.4.6", "Too many hops (mail loop?)")
}
pub fn bare_newline() -> Reply {
    Reply::new(550, "5.6.0", "NUL characters in message not allowed")
}
pub fn storage_failed() -> Reply {
    Reply::new(451, "4.3.0", "Temporary failure storing message, try again later")
}
pub fn memory_full() -> Reply {
    Reply::new(451, "4.3.1", "Insufficient system resources, try again later")
}
pub fn too_many_errors() -> Reply {
    Reply::new(421, "4.7.0", "Too many errors, closing connection")
}
pub fn timeout() -> Reply {
    Reply::new(421, "4.4.2", "Timeout exceeded, closing connection")
}
pub fn too_many_connections() -> Reply {
    Reply::new(421, "4.7.0", "Too many connections, try again later")
}
pub fn shutting_down() -> Reply {
    Reply::new(421, "4.3.2", "Service shutting down, try again later")
}
pub fn tls_required() -> Reply {
    Reply::new(530, "5.7.0", "Must issue a STARTTLS command first")
}
pub fn auth_required() -> Reply {
    Reply::new(530, "5.7.0", "Authentication required")
}
pub fn encryption_required() -> Reply {
    Reply::new(538, "5.7.11", "Encryption required for requested authentication mechanism")
}
pub fn auth_failed() -> Reply {
    Reply::new(535, "5.7.8", "Authentication credentials invalid")
}
pub fn auth_locked_out() -> Reply {
    Reply::new(454, "4.7.0", "Too many failed authentication attempts from your address; try again later")
}
pub fn auth_cancelled() -> Reply {
    Reply::new(501, "5.7.0", "Authentication cancelled")
}
pub fn auth_mechanism() -> Reply {
    Reply::new(504, "5.5.4", "Unrecognized authentication type")
}
pub fn bad_base64() -> Reply {
    Reply::new(501, "5.5.2", "Cannot decode response")
}
pub fn tls_unavailable() -> Reply {
    Reply::new(502, "5.5.1", "STARTTLS not available")
}
pub fn bdat_malformed() -> Reply {
    Reply::new(421, "4.7.0", "Malformed BDAT, closing connection")
}

// Sender ownership, recipient validation and the rate limit (policy/).
pub fn sender_not_owned(address: &str, user: &str) -> Reply {
    Reply::new(553, "5.7.1", format!("<{address}>: Sender address rejected: not owned by user {user}"))
}
pub fn from_not_owned(address: &str, user: &str) -> Reply {
    Reply::new(550, "5.7.1", format!("<{address}>: From: header address rejected: not owned by user {user}"))
}
pub fn from_missing(user: &str) -> Reply {
    Reply::new(550, "5.7.1", format!("No From: header address; user {user} may send only as its own addresses"))
}
pub fn header_too_long_to_check(user: &str) -> Reply {
    Reply::new(
        550,
        "5.7.1",
        format!(
            "Header section over {} bytes: From: cannot be checked for user {user}",
            crate::session::header::MAX_HEADER_SECTION
        ),
    )
}
pub fn unknown_recipient(address: &str) -> Reply {
    Reply::new(550, "5.1.1", format!("<{address}>: Recipient address rejected: User unknown in relay recipient table"))
}
pub fn not_a_return_path(address: &str) -> Reply {
    Reply::new(550, "5.1.1", format!("<{address}>: Recipient address rejected: not a return path of ours"))
}
pub fn report_alone() -> Reply {
    Reply::new(452, "4.5.3", "Reports to the feedback domain go in a transaction of their own")
}
pub fn rate_limited(who: &str, limit: &str, retry_after: std::time::Duration) -> Reply {
    let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    Reply::new(
        451,
        "4.7.1",
        format!(
            "Too much mail from {who} (limit {limit}), try again in {}",
            humantime::format_duration(std::time::Duration::from_secs(secs.max(1)))
        ),
    )
}
