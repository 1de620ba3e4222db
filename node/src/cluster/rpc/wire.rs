//! What both ends of a connection share: the preamble exchange, a buffered frame reader, and the outbox with the
//! writer that empties it.
//!
//! Batching: whoever has a frame to send (a caller on the client, a finished handler on the server) appends its
//! bytes to the outbox under a short lock and wakes the writer. The writer swaps the whole buffer out and writes it
//! with one `write_all` and one flush, so frames queued while a write is under way leave together in the next one.
//! Under load that is one syscall (and one TLS record run) for many frames; when idle, a frame leaves at once.

use bytes::{Buf, BytesMut};
use idp_proto::rpc::{Frame, FrameError, RpcReply, PREAMBLE, PREAMBLE_V2};
use parking_lot::Mutex;
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// Bytes the reader asks the socket for at a time (more when a frame is larger).
const READ_CHUNK: usize = 64 * 1024;
/// A write buffer that grew past this (one large frame) is not kept for the next batch.
const KEPT_BUFFER: usize = 256 * 1024;
/// Bytes queued for a peer that does not read them fast enough, past which the connection is given up: memory
/// stays bounded, and calls to a stalled peer fail now instead of at their timeouts. Above `MAX_FRAME_LEN`, so any
/// one frame fits.
const MAX_QUEUED: usize = 16 * 1024 * 1024;

/// Why a connection stopped reading.
#[derive(Debug, thiserror::Error)]
pub(super) enum ReadError {
    #[error("read failed: {0}")]
    Io(#[from] io::Error),
    #[error("malformed frame: {0}")]
    Frame(#[from] FrameError),
    #[error("connection closed in the middle of a frame")]
    UnexpectedEof,
}

/// The client's half of the preamble exchange: offers version 2 (or 1 for a peer known to speak only that), reads
/// the server's answer, and answers the version the connection speaks. A version-1 server sends its preamble
/// without reading ours, so its answer is version 1 even to an offer of 2 (it then closes the connection: the caller
/// remembers the peer's version for the next one). It costs one round trip on a new connection and proves the peer
/// is a live RPC server (a stopped process still completes the TCP handshake from its kernel backlog, but never
/// answers this).
pub(super) async fn client_preamble<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, offer: u8) -> io::Result<u8> {
    stream.write_all(if offer >= 2 { &PREAMBLE_V2 } else { &PREAMBLE }).await?;
    stream.flush().await?;
    let mut theirs = [0u8; PREAMBLE.len()];
    stream.read_exact(&mut theirs).await?;
    match theirs {
        answer if answer == PREAMBLE_V2 && offer >= 2 => Ok(2),
        answer if answer == PREAMBLE => Ok(1),
        _ => Err(io::Error::new(io::ErrorKind::InvalidData, "peer is not an idp rpc endpoint of a known version")),
    }
}

/// The server's half: reads the client's preamble and answers in the client's version (1 or 2), so clients of
/// both versions work with this server. Anything else gets our version-1 preamble and is refused.
pub(super) async fn server_preamble<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) -> io::Result<u8> {
    let mut theirs = [0u8; PREAMBLE.len()];
    stream.read_exact(&mut theirs).await?;
    let version = match theirs {
        offer if offer == PREAMBLE_V2 => Some(2),
        offer if offer == PREAMBLE => Some(1),
        _ => None,
    };
    stream.write_all(if version == Some(2) { &PREAMBLE_V2 } else { &PREAMBLE }).await?;
    stream.flush().await?;
    version.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "peer is not an idp rpc endpoint"))
}

/// Reads whole frames from a byte stream, several per read when they are small.
pub(super) struct FrameReader<R> {
    reader: R,
    buffer: BytesMut,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub(super) fn new(reader: R) -> Self {
        Self { reader, buffer: BytesMut::with_capacity(READ_CHUNK) }
    }

    /// The next frame, or `None` when the peer closed the connection between frames. Cancel-safe: bytes already
    /// read stay in the buffer.
    pub(super) async fn next(&mut self) -> Result<Option<Frame>, ReadError> {
        loop {
            if let Some((frame, used)) = Frame::parse(&self.buffer)? {
                self.buffer.advance(used);
                return Ok(Some(frame));
            }
            self.buffer.reserve(READ_CHUNK);
            if self.reader.read_buf(&mut self.buffer).await? == 0 {
                return if self.buffer.is_empty() { Ok(None) } else { Err(ReadError::UnexpectedEof) };
            }
        }
    }
}

/// Frames waiting for the writer, and when the writer may stop.
pub(super) struct Outbox {
    state: Mutex<OutboxState>,
    wakeup: Notify,
    /// Cancelled when more than `MAX_QUEUED` bytes wait: the connection must be closed.
    overflow: CancellationToken,
}

#[derive(Default)]
struct OutboxState {
    frames: Vec<u8>,
    /// Server side: calls whose reply has not been queued yet. The writer outlives the reader until they are.
    in_flight: usize,
    /// No more frames will be queued but for the `in_flight` replies.
    finishing: bool,
}

/// What the writer found in the outbox.
enum Batch {
    Frames,
    Empty,
    Finished,
}

impl Outbox {
    pub(super) fn new() -> Self {
        Self { state: Mutex::new(OutboxState::default()), wakeup: Notify::new(), overflow: CancellationToken::new() }
    }

    /// Queues one frame. On error (too large) nothing is queued. Past `MAX_QUEUED` the frame is dropped and
    /// [`Outbox::overflowed`] fires.
    pub(super) fn push(&self, frame: &Frame) -> Result<(), FrameError> {
        let mut state = self.state.lock();
        if state.frames.len() > MAX_QUEUED {
            drop(state);
            self.overflow.cancel();
            return Ok(());
        }
        frame.encode(&mut state.frames)?;
        drop(state);
        self.wakeup.notify_one();
        Ok(())
    }

    /// Completes when the peer has fallen so far behind that the connection must be closed.
    pub(super) fn overflowed(&self) -> WaitForCancellationFuture<'_> {
        self.overflow.cancelled()
    }

    /// Server side: a call was handed to the handler; its reply will come through [`Outbox::push_reply`].
    pub(super) fn begin_call(&self) {
        self.state.lock().in_flight += 1;
    }

    /// Server side: queues the reply of a call counted by [`Outbox::begin_call`]. A reply too large for a frame is
    /// replaced by an error, so the caller hears about it instead of waiting for its timeout.
    pub(super) fn push_reply(&self, id: u64, reply: RpcReply) {
        let frame = Frame::Reply { id, reply };
        let mut state = self.state.lock();
        state.in_flight -= 1;
        if state.frames.len() > MAX_QUEUED {
            drop(state);
            self.overflow.cancel();
            return;
        }
        if let Err(error) = frame.encode(&mut state.frames) {
            tracing::warn!(%error, "rpc reply cannot be sent");
            let refusal = Frame::Reply { id, reply: RpcReply::Error(format!("reply not sent: {error}")) };
            refusal.encode(&mut state.frames).expect("a short error reply always fits in a frame");
        }
        drop(state);
        self.wakeup.notify_one();
    }

    /// No new frames: the writer sends what is queued and what is in flight, then closes its half.
    pub(super) fn finish(&self) {
        self.state.lock().finishing = true;
        self.wakeup.notify_one();
    }

    /// Swaps the queued frames into `batch` (which must be empty).
    fn take(&self, batch: &mut Vec<u8>) -> Batch {
        let mut state = self.state.lock();
        if !state.frames.is_empty() {
            std::mem::swap(&mut state.frames, batch);
            Batch::Frames
        } else if state.finishing && state.in_flight == 0 {
            Batch::Finished
        } else {
            Batch::Empty
        }
    }
}

/// Writes whatever the outbox holds, one write and one flush per batch, until the outbox is finished and drained;
/// then shuts the write half down (a TLS close_notify, a TCP FIN). Returns on the first write error.
pub(super) async fn write_frames<W: AsyncWrite + Unpin>(mut writer: W, outbox: &Outbox) -> io::Result<()> {
    let mut batch = Vec::with_capacity(READ_CHUNK);
    loop {
        match outbox.take(&mut batch) {
            Batch::Frames => {
                writer.write_all(&batch).await?;
                writer.flush().await?;
                batch.clear();
                if batch.capacity() > KEPT_BUFFER {
                    batch = Vec::with_capacity(READ_CHUNK);
                }
            }
            // `notify_one` keeps a permit when nobody waits, so a frame queued between `take` and here is not missed.
            Batch::Empty => outbox.wakeup.notified().await,
            Batch::Finished => return writer.shutdown().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use idp_proto::rpc::RpcCall;

    #[tokio::test]
    async fn frames_split_across_reads_and_packed_in_one_read_both_come_out() {
        let frames: Vec<Frame> = (0..50)
            .map(|id| Frame::Call { id, call: RpcCall::Shard { shard: 1, op: "op".into(), body: vec![id as u8; 300] } })
            .collect();
        let mut bytes = Vec::new();
        for frame in &frames {
            frame.encode(&mut bytes).unwrap();
        }
        // A reader that hands out 7 bytes at a time, then all at once.
        for chunk in [7, bytes.len()] {
            let (mut near, far) = tokio::io::duplex(chunk);
            let sent = bytes.clone();
            tokio::spawn(async move { near.write_all(&sent).await.unwrap() });
            let mut reader = FrameReader::new(far);
            for frame in &frames {
                assert_eq!(reader.next().await.unwrap().as_ref(), Some(frame));
            }
            assert!(reader.next().await.unwrap().is_none());
        }
    }

    #[tokio::test]
    async fn a_stream_cut_inside_a_frame_is_an_error() {
        let mut bytes = Vec::new();
        Frame::Call { id: 1, call: RpcCall::Ping }.encode(&mut bytes).unwrap();
        let mut reader = FrameReader::new(&bytes[..bytes.len() - 1]);
        assert!(matches!(reader.next().await, Err(ReadError::UnexpectedEof)));
    }

    #[test]
    fn a_backlog_past_the_limit_marks_the_outbox_overflowed() {
        let outbox = Outbox::new();
        let frame = Frame::Reply { id: 1, reply: RpcReply::Shard(vec![0; 1024 * 1024]) };
        for _ in 0..16 {
            outbox.push(&frame).unwrap();
        }
        assert!(!outbox.overflow.is_cancelled(), "the frame that crosses the limit is still queued");
        outbox.push(&frame).unwrap();
        outbox.push(&frame).unwrap();
        assert!(outbox.overflow.is_cancelled());
        assert!(outbox.state.lock().frames.len() < MAX_QUEUED + 2 * 1024 * 1024, "the excess was dropped");
    }

    #[tokio::test]
    async fn the_writer_drains_in_flight_replies_before_closing() {
        let outbox = Outbox::new();
        outbox.begin_call();
        outbox.push(&Frame::Reply { id: 1, reply: RpcReply::Pong }).unwrap();
        outbox.finish();
        let (near, far) = tokio::io::duplex(1024);
        let writing = write_frames(near, &outbox);
        let replying = async {
            tokio::task::yield_now().await;
            outbox.push_reply(2, RpcReply::NotOwner);
        };
        let (written, ()) = tokio::join!(writing, replying);
        written.unwrap();
        let mut reader = FrameReader::new(far);
        assert_eq!(reader.next().await.unwrap().map(|frame| frame.id()), Some(1));
        assert_eq!(reader.next().await.unwrap().map(|frame| frame.id()), Some(2));
        assert!(reader.next().await.unwrap().is_none(), "closed after the last reply");
    }
}
