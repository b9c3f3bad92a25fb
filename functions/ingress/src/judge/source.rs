//! The bytes of a message as the checks read them: in memory (a message that fitted in one
//! part), or the stored object read back from the spool (a streamed message, which no session
//! ever holds whole). Checks read a stored message as a stream of chunks, so judging a 20 MB
//! message costs a few chunks of memory, not 20 MB.

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};

use crate::spool::upload::Stored;

/// A message in chunks; an error ends it.
pub type Chunks = BoxStream<'static, Result<Bytes, String>>;

/// Reading a stored message back (the spool's side).
#[async_trait]
pub trait ReadBack: Send + Sync {
    async fn read(&self, stored: &Stored) -> Result<Chunks, String>;
}

/// Where a judged message's bytes are.
#[derive(Clone, Copy)]
pub enum Source<'a> {
    Memory(&'a [u8]),
    Stored { spool: &'a dyn ReadBack, object: &'a Stored },
}

impl Source<'_> {
    /// Bytes of the message.
    pub fn len(&self) -> u64 {
        match self {
            Source::Memory(b) => b.len() as u64,
            Source::Stored { object, .. } => object.size,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The message from its first byte, in chunks (a stored one is read again on every call).
    pub async fn chunks(&self) -> Result<Chunks, String> {
        match self {
            Source::Memory(b) => Ok(stream::once(std::future::ready(Ok(Bytes::copy_from_slice(b)))).boxed()),
            Source::Stored { spool, object } => spool.read(object).await,
        }
    }
}
