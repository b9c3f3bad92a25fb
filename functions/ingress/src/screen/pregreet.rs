//! The pregreet test: an SMTP client must wait for the server's greeting (RFC 5321 §3.1). Spam
//! bots often do not; they send EHLO (or the whole transaction) at once. The greeting is held
//! back for `INGRESS_GREET_PAUSE` while the socket is watched: a client that sends anything in
//! that time is refused with `554 5.5.1` and closed, before any of its commands is read.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// What the client did during the pause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pause {
    /// Nothing: greet it.
    Quiet,
    /// It sent this many bytes before the greeting.
    Talked(usize),
    /// It closed (or the read failed).
    Closed,
}

/// Watch `stream` for `pause` (returns at once when it is zero).
pub async fn wait<S: AsyncRead + Unpin + ?Sized>(stream: &mut S, pause: Duration) -> Pause {
    if pause.is_zero() {
        return Pause::Quiet;
    }
    let mut buf = [0u8; 512];
    match tokio::time::timeout(pause, stream.read(&mut buf)).await {
        Err(_) => Pause::Quiet,
        Ok(Ok(0)) | Ok(Err(_)) => Pause::Closed,
        Ok(Ok(n)) => Pause::Talked(n),
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    #[tokio::test]
    async fn a_client_that_talks_first_is_caught() {
        let (client, server) = tokio::io::duplex(1024);
        let mut server = server;
        let mut client = client;
        client.write_all(b"EHLO bot\r\n").await.unwrap();
        assert_eq!(wait(&mut server, Duration::from_secs(5)).await, Pause::Talked(10));
    }

    #[tokio::test]
    async fn a_patient_client_passes_and_a_closed_one_is_gone() {
        let (client, server) = tokio::io::duplex(1024);
        let mut server = server;
        assert_eq!(wait(&mut server, Duration::from_millis(50)).await, Pause::Quiet);
        assert_eq!(wait(&mut server, Duration::ZERO).await, Pause::Quiet);
        drop(client);
        assert_eq!(wait(&mut server, Duration::from_millis(50)).await, Pause::Closed);
    }
}
