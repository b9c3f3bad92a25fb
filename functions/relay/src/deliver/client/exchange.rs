//! One transaction's MAIL, RCPT and DATA on an open session — all in one write when the server
//! offers PIPELINING, one by one otherwise — and the replies turned into a verdict per recipient.
//! Replies read before a broken connection still count; [`Broken`] says whether any RCPT had been
//! answered, which decides whether a pooled session's job may go to a fresh one.

use shared::{Job, Reply};

use super::{Conn, SmtpTransport};
use crate::deliver::wire::{self, Extensions};
use crate::vocab::Verdict;

/// A connection that broke in a transaction; `answered` once any RCPT had its reply.
pub(super) struct Broken {
    pub(super) error: String,
    pub(super) answered: bool,
}

/// Past the RCPT replies: something was answered.
impl From<String> for Broken {
    fn from(error: String) -> Self {
        Self { error, answered: true }
    }
}

impl SmtpTransport {
    pub(super) async fn exchange(
        &self,
        c: &mut Conn,
        ext: &Extensions,
        job: &Job,
        rcpts: &[&shared::Recipient],
        verdicts: &mut [Option<Verdict>],
        message: &[u8],
    ) -> Result<(), Broken> {
        let wanted: Vec<usize> = (0..rcpts.len()).filter(|&i| verdicts[i].is_none()).collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let reverse_path = crate::deliver::feedback::reverse_path(self.feedback.as_ref(), job);
        let mut cmds = vec![wire::mail_from(job, &reverse_path, ext, message.len())];
        cmds.extend(wanted.iter().map(|&i| wire::rcpt_to(rcpts[i], ext.dsn)));
        cmds.push("DATA".into());
        // Without PIPELINING each command waits for its reply; with it all go in one write.
        // Replies read before a broken connection still count (a 421 before the close, say).
        let mut replies = Vec::with_capacity(cmds.len());
        let mut broken = None;
        if ext.pipelining {
            let batch: String = cmds.iter().map(|l| format!("{l}\r\n")).collect();
            broken = c.write(batch.as_bytes(), self.command_timeout).await.err();
            while broken.is_none() && replies.len() < cmds.len() {
                match c.read_reply().await {
                    Ok(r) => replies.push(r),
                    Err(e) => broken = Some(e),
                }
            }
        } else {
            for (n, cmd) in cmds.iter().enumerate() {
                // No DATA after a refused MAIL or when no RCPT was accepted.
                if n + 1 == cmds.len() && (!replies[0].is_positive() || !replies[1..].iter().any(Reply::is_positive)) {
                    break;
                }
                match c.command(cmd).await {
                    Ok(r) => {
                        let refused_mail = n == 0 && !r.is_positive();
                        replies.push(r);
                        if refused_mail {
                            break;
                        }
                    }
                    Err(e) => {
                        broken = Some(e);
                        break;
                    }
                }
            }
        }
        let unanswered = |error| Broken { error, answered: false };
        let Some(mail) = replies.first() else {
            return Err(unanswered(broken.unwrap_or_else(|| "no reply to MAIL".into())));
        };
        if !mail.is_positive() {
            for &i in &wanted {
                verdicts[i] = Some(Verdict::from_reply(mail.clone()));
            }
            return Ok(());
        }
        let mut accepted = Vec::new();
        for (k, &i) in wanted.iter().enumerate() {
            match replies.get(1 + k) {
                Some(r) if r.is_positive() => accepted.push(i),
                Some(r) => verdicts[i] = Some(Verdict::from_reply(r.clone())),
                None => {} // unanswered: the caller defers it with the connection error
            }
        }
        if let Some(error) = broken {
            return Err(Broken { error, answered: replies.len() > 1 });
        }
        let data = replies.get(1 + wanted.len());
        if accepted.is_empty() {
            if data.is_some_and(|d| d.code == 354) {
                // RFC 2920 §3.1: the server wants a message it will reject; give it an empty one.
                c.write(b".\r\n", self.command_timeout).await?;
                c.read_reply().await?;
            }
            return Ok(());
        }
        let Some(data) = data.cloned() else { return Err("no reply to DATA".to_string().into()) };
        let after_data = if data.code == 354 {
            c.write(&wire::data_block(message), self.data_timeout).await?;
            let r = c.read_reply_within(self.data_timeout).await?;
            if r.code < 400 && !r.is_positive() {
                Verdict::deferred("4.5.0", r.one_line())
            } else {
                Verdict::from_reply(r)
            }
        } else if data.code >= 400 {
            Verdict::from_reply(data)
        } else {
            Verdict::deferred("4.5.0", format!("unexpected reply to DATA: {}", data.one_line()))
        };
        for i in accepted {
            verdicts[i] = Some(after_data.clone());
        }
        Ok(())
    }
}
