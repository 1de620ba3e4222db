//! The internal RPC between nodes: a node that does not own a record's shard forwards the operation to the owner.
//!
//! This module holds the messages and their wire format, no I/O (the node crate owns the sockets). A connection
//! starts with [`PREAMBLE`] in each direction, then carries length-prefixed frames; many calls are in flight at
//! once on one connection and replies come back in any order, matched by request id.
//!
//! Frame layout (integers big-endian):
//!
//! ```text
//! u32 payload length (bytes after this field, at most MAX_FRAME_LEN)
//! u64 request id
//! u8  tag, then by tag:
//!     0x01 call shard:    u16 shard, u8 op name length, op name (UTF-8), body (the rest)
//!     0x02 call ping
//!     0x04 call shard with a request id (protocol version 2):
//!                         u16 shard, u8 op name length, op name (UTF-8), u8 request id length, request id
//!                         (UTF-8), body (the rest)
//!     0x81 reply shard:   body (the rest)
//!     0x82 reply not-owner
//!     0x83 reply pong
//!     0x84 reply error:   message (UTF-8, the rest)
//! ```
//!
//! Bodies are opaque bytes (serde_json of an operation or of its result), copied as they are: no base64, no JSON
//! array of numbers.

use std::fmt;

/// Sent first by both ends of a connection: the protocol name and its version (u16). A peer of another version is
/// refused at connect time instead of misreading frames.
pub const PREAMBLE: [u8; 8] = *b"IDPRPC\x00\x01";

/// Version 2 adds the traced shard call ([`RpcCall::TracedShard`]). A version-2 server answers a client in the
/// client's version (1 or 2); a version-2 client that meets a version-1 server reconnects speaking version 1 and
/// sends its calls untraced, so nodes of both versions work together during a rolling restart.
pub const PREAMBLE_V2: [u8; 8] = *b"IDPRPC\x00\x02";

/// Longest request id carried by a traced call (its length is one byte on the wire).
pub const MAX_REQUEST_ID_LEN: usize = u8::MAX as usize;

/// Bytes of the length prefix in front of each frame's payload.
pub const LENGTH_PREFIX_LEN: usize = 4;

/// Largest payload of a frame (everything after the length prefix). A larger announced length is an error as
/// soon as the prefix is read, so a peer cannot make the other end buffer more than this.
pub const MAX_FRAME_LEN: usize = 4 * 1024 * 1024;

/// Longest operation name (its length is one byte on the wire).
pub const MAX_OP_NAME_LEN: usize = u8::MAX as usize;

/// Request id and tag, the part common to every payload.
const PAYLOAD_HEADER_LEN: usize = 8 + 1;

const TAG_CALL_SHARD: u8 = 0x01;
const TAG_CALL_PING: u8 = 0x02;
const TAG_CALL_TRACED_SHARD: u8 = 0x04;
const TAG_REPLY_SHARD: u8 = 0x81;
const TAG_REPLY_NOT_OWNER: u8 = 0x82;
const TAG_REPLY_PONG: u8 = 0x83;
const TAG_REPLY_ERROR: u8 = 0x84;

/// A request to another node.
#[derive(Clone, PartialEq, Eq)]
pub enum RpcCall {
    /// Run `op` on `shard`, which the receiving node is believed to own. `body` is the serde_json of the operation.
    Shard { shard: u16, op: String, body: Vec<u8> },
    /// Liveness check; answered by the RPC server itself with [`RpcReply::Pong`].
    Ping,
    /// A [`RpcCall::Shard`] on behalf of the HTTP request `request_id` (logs and audit events of both nodes carry
    /// it). Only sent on a version-2 connection.
    TracedShard { request_id: String, shard: u16, op: String, body: Vec<u8> },
}

impl RpcCall {
    /// The same call without its request id (for a version-1 peer).
    pub fn untraced(self) -> Self {
        match self {
            Self::TracedShard { shard, op, body, .. } => Self::Shard { shard, op, body },
            other => other,
        }
    }
}

/// The answer to an [`RpcCall`].
#[derive(Clone, PartialEq, Eq)]
pub enum RpcReply {
    /// The serde_json of the operation's result.
    Shard(Vec<u8>),
    /// The receiving node does not own the shard (any more): the caller looks the owner up again.
    NotOwner,
    Pong,
    /// The call could not be answered (unknown operation, undecodable body, handler failure).
    Error(String),
}

/// Bodies carry codes, tokens and session ids (DESIGN: no secrets in logs): Debug shows their length only.
impl fmt::Debug for RpcCall {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Shard { shard, op, body } => formatter
                .debug_struct("Shard")
                .field("shard", shard)
                .field("op", op)
                .field("body_len", &body.len())
                .finish(),
            Self::Ping => formatter.write_str("Ping"),
            Self::TracedShard { request_id, shard, op, body } => formatter
                .debug_struct("TracedShard")
                .field("request_id", request_id)
                .field("shard", shard)
                .field("op", op)
                .field("body_len", &body.len())
                .finish(),
        }
    }
}

impl fmt::Debug for RpcReply {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Shard(body) => formatter.debug_struct("Shard").field("body_len", &body.len()).finish(),
            Self::NotOwner => formatter.write_str("NotOwner"),
            Self::Pong => formatter.write_str("Pong"),
            Self::Error(message) => formatter.debug_tuple("Error").field(message).finish(),
        }
    }
}

/// One unit on the wire: a call from the client or a reply from the server, with its request id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Call { id: u64, call: RpcCall },
    Reply { id: u64, reply: RpcReply },
}

/// Why bytes are not a valid frame, or a frame cannot be encoded. After a decoding error the stream is out of step:
/// the connection is closed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {MAX_FRAME_LEN}")]
    TooLarge { len: usize },
    #[error("frame shorter than its fields")]
    Truncated,
    #[error("unknown frame tag {0:#04x}")]
    UnknownTag(u8),
    #[error("operation name of {0} bytes exceeds the limit of {MAX_OP_NAME_LEN}")]
    OpNameTooLong(usize),
    #[error("text field is not UTF-8")]
    InvalidUtf8,
    #[error("request id of {0} bytes exceeds the limit of {MAX_REQUEST_ID_LEN}")]
    RequestIdTooLong(usize),
}

impl Frame {
    /// The request id the frame belongs to.
    pub fn id(&self) -> u64 {
        match self {
            Self::Call { id, .. } | Self::Reply { id, .. } => *id,
        }
    }

    /// Bytes of the payload (without the length prefix).
    pub fn payload_len(&self) -> usize {
        PAYLOAD_HEADER_LEN
            + match self {
                Self::Call { call: RpcCall::Shard { op, body, .. }, .. } => 2 + 1 + op.len() + body.len(),
                Self::Call { call: RpcCall::Ping, .. } => 0,
                Self::Call { call: RpcCall::TracedShard { request_id, op, body, .. }, .. } => {
                    2 + 1 + op.len() + 1 + request_id.len() + body.len()
                }
                Self::Reply { reply: RpcReply::Shard(body), .. } => body.len(),
                Self::Reply { reply: RpcReply::Error(message), .. } => message.len(),
                Self::Reply { reply: RpcReply::NotOwner | RpcReply::Pong, .. } => 0,
            }
    }

    /// Appends the length prefix and the payload to `out`. On error nothing is appended.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), FrameError> {
        let len = self.payload_len();
        if len > MAX_FRAME_LEN {
            return Err(FrameError::TooLarge { len });
        }
        if let Self::Call { call: RpcCall::Shard { op, .. } | RpcCall::TracedShard { op, .. }, .. } = self {
            if op.len() > MAX_OP_NAME_LEN {
                return Err(FrameError::OpNameTooLong(op.len()));
            }
        }
        if let Self::Call { call: RpcCall::TracedShard { request_id, .. }, .. } = self {
            if request_id.len() > MAX_REQUEST_ID_LEN {
                return Err(FrameError::RequestIdTooLong(request_id.len()));
            }
        }
        out.reserve(LENGTH_PREFIX_LEN + len);
        out.extend_from_slice(&(len as u32).to_be_bytes());
        out.extend_from_slice(&self.id().to_be_bytes());
        match self {
            Self::Call { call: RpcCall::Shard { shard, op, body }, .. } => {
                out.push(TAG_CALL_SHARD);
                out.extend_from_slice(&shard.to_be_bytes());
                out.push(op.len() as u8);
                out.extend_from_slice(op.as_bytes());
                out.extend_from_slice(body);
            }
            Self::Call { call: RpcCall::Ping, .. } => out.push(TAG_CALL_PING),
            Self::Call { call: RpcCall::TracedShard { request_id, shard, op, body }, .. } => {
                out.push(TAG_CALL_TRACED_SHARD);
                out.extend_from_slice(&shard.to_be_bytes());
                out.push(op.len() as u8);
                out.extend_from_slice(op.as_bytes());
                out.push(request_id.len() as u8);
                out.extend_from_slice(request_id.as_bytes());
                out.extend_from_slice(body);
            }
            Self::Reply { reply: RpcReply::Shard(body), .. } => {
                out.push(TAG_REPLY_SHARD);
                out.extend_from_slice(body);
            }
            Self::Reply { reply: RpcReply::NotOwner, .. } => out.push(TAG_REPLY_NOT_OWNER),
            Self::Reply { reply: RpcReply::Pong, .. } => out.push(TAG_REPLY_PONG),
            Self::Reply { reply: RpcReply::Error(message), .. } => {
                out.push(TAG_REPLY_ERROR);
                out.extend_from_slice(message.as_bytes());
            }
        }
        Ok(())
    }

    /// The first frame of `buffer` and the bytes it occupies, or `None` while it is incomplete. An announced length
    /// over [`MAX_FRAME_LEN`] is an error as soon as the prefix has arrived.
    pub fn parse(buffer: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
        let Some(prefix) = buffer.first_chunk::<LENGTH_PREFIX_LEN>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*prefix) as usize;
        if len > MAX_FRAME_LEN {
            return Err(FrameError::TooLarge { len });
        }
        let Some(payload) = buffer.get(LENGTH_PREFIX_LEN..LENGTH_PREFIX_LEN + len) else {
            return Ok(None);
        };
        Ok(Some((Self::decode_payload(payload)?, LENGTH_PREFIX_LEN + len)))
    }

    /// A frame from its payload (the bytes after the length prefix).
    pub fn decode_payload(payload: &[u8]) -> Result<Frame, FrameError> {
        let (id, rest) = payload.split_first_chunk::<8>().ok_or(FrameError::Truncated)?;
        let id = u64::from_be_bytes(*id);
        let (tag, rest) = rest.split_first().ok_or(FrameError::Truncated)?;
        let call = |call| Ok(Frame::Call { id, call });
        let reply = |reply| Ok(Frame::Reply { id, reply });
        match *tag {
            TAG_CALL_SHARD => {
                let (shard, rest) = rest.split_first_chunk::<2>().ok_or(FrameError::Truncated)?;
                let (op_len, rest) = rest.split_first().ok_or(FrameError::Truncated)?;
                let (op, body) = rest.split_at_checked(usize::from(*op_len)).ok_or(FrameError::Truncated)?;
                call(RpcCall::Shard { shard: u16::from_be_bytes(*shard), op: utf8(op)?, body: body.to_vec() })
            }
            TAG_CALL_PING => empty(rest).and_then(|()| call(RpcCall::Ping)),
            TAG_CALL_TRACED_SHARD => {
                let (shard, rest) = rest.split_first_chunk::<2>().ok_or(FrameError::Truncated)?;
                let (op_len, rest) = rest.split_first().ok_or(FrameError::Truncated)?;
                let (op, rest) = rest.split_at_checked(usize::from(*op_len)).ok_or(FrameError::Truncated)?;
                let (id_len, rest) = rest.split_first().ok_or(FrameError::Truncated)?;
                let (request_id, body) = rest.split_at_checked(usize::from(*id_len)).ok_or(FrameError::Truncated)?;
                call(RpcCall::TracedShard {
                    request_id: utf8(request_id)?,
                    shard: u16::from_be_bytes(*shard),
                    op: utf8(op)?,
                    body: body.to_vec(),
                })
            }
            TAG_REPLY_SHARD => reply(RpcReply::Shard(rest.to_vec())),
            TAG_REPLY_NOT_OWNER => empty(rest).and_then(|()| reply(RpcReply::NotOwner)),
            TAG_REPLY_PONG => empty(rest).and_then(|()| reply(RpcReply::Pong)),
            TAG_REPLY_ERROR => reply(RpcReply::Error(utf8(rest)?)),
            unknown => Err(FrameError::UnknownTag(unknown)),
        }
    }
}

/// Tags without fields carry nothing after the tag; extra bytes mean the peer speaks another format.
fn empty(rest: &[u8]) -> Result<(), FrameError> {
    if rest.is_empty() {
        Ok(())
    } else {
        Err(FrameError::Truncated)
    }
}

fn utf8(bytes: &[u8]) -> Result<String, FrameError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| FrameError::InvalidUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Frame> {
        let body = br#"{"code":"abc","client_id":"app"}"#.to_vec();
        vec![
            Frame::Call { id: 1, call: RpcCall::Shard { shard: 1023, op: "redeem_code".into(), body: body.clone() } },
            Frame::Call { id: u64::MAX, call: RpcCall::Shard { shard: 0, op: String::new(), body: Vec::new() } },
            Frame::Call { id: 7, call: RpcCall::Ping },
            Frame::Call {
                id: 8,
                call: RpcCall::TracedShard {
                    request_id: "4bf92f3577b34da6".into(),
                    shard: 5,
                    op: "rotate_refresh".into(),
                    body: body.clone(),
                },
            },
            Frame::Reply { id: 1, reply: RpcReply::Shard(body) },
            Frame::Reply { id: 2, reply: RpcReply::Shard(Vec::new()) },
            Frame::Reply { id: 3, reply: RpcReply::NotOwner },
            Frame::Reply { id: 4, reply: RpcReply::Pong },
            Frame::Reply { id: 5, reply: RpcReply::Error("unknown op «x»".into()) },
        ]
    }

    fn encoded(frame: &Frame) -> Vec<u8> {
        let mut out = Vec::new();
        frame.encode(&mut out).unwrap();
        out
    }

    #[test]
    fn every_frame_round_trips() {
        for frame in samples() {
            let bytes = encoded(&frame);
            assert_eq!(bytes.len(), LENGTH_PREFIX_LEN + frame.payload_len(), "{frame:?}");
            assert_eq!(Frame::parse(&bytes), Ok(Some((frame.clone(), bytes.len()))));
        }
    }

    #[test]
    fn the_layout_is_the_documented_one() {
        let frame =
            Frame::Call { id: 0x0102, call: RpcCall::Shard { shard: 0x0304, op: "op".into(), body: b"{}".into() } };
        let expected = [&[0, 0, 0, 16][..], &[0, 0, 0, 0, 0, 0, 1, 2], &[0x01, 3, 4, 2], b"op", b"{}"].concat();
        assert_eq!(encoded(&frame), expected);
    }

    #[test]
    fn a_traced_call_has_the_documented_layout_and_drops_its_id_for_version_one() {
        let call = RpcCall::TracedShard { request_id: "r1".into(), shard: 0x0304, op: "op".into(), body: b"{}".into() };
        let frame = Frame::Call { id: 0x0102, call: call.clone() };
        let expected =
            [&[0, 0, 0, 19][..], &[0, 0, 0, 0, 0, 0, 1, 2], &[0x04, 3, 4, 2], b"op", &[2], b"r1", b"{}"].concat();
        assert_eq!(encoded(&frame), expected);
        assert_eq!(call.untraced(), RpcCall::Shard { shard: 0x0304, op: "op".into(), body: b"{}".into() });
        let long = RpcCall::TracedShard { request_id: "x".repeat(256), shard: 0, op: "op".into(), body: vec![] };
        assert_eq!(Frame::Call { id: 1, call: long }.encode(&mut Vec::new()), Err(FrameError::RequestIdTooLong(256)));
    }

    #[test]
    fn concatenated_frames_parse_one_after_the_other() {
        let frames = samples();
        let mut stream = Vec::new();
        for frame in &frames {
            frame.encode(&mut stream).unwrap();
        }
        let mut offset = 0;
        for frame in frames {
            let (parsed, used) = Frame::parse(&stream[offset..]).unwrap().unwrap();
            assert_eq!(parsed, frame);
            offset += used;
        }
        assert_eq!(offset, stream.len());
    }

    #[test]
    fn every_incomplete_prefix_waits_for_more() {
        for frame in samples() {
            let bytes = encoded(&frame);
            for end in 0..bytes.len() {
                assert_eq!(Frame::parse(&bytes[..end]), Ok(None), "{frame:?} cut at {end}");
            }
        }
    }

    #[test]
    fn a_payload_shorter_than_its_fields_is_an_error() {
        assert_eq!(Frame::decode_payload(&[]), Err(FrameError::Truncated));
        assert_eq!(Frame::decode_payload(&[0; 8]), Err(FrameError::Truncated));
        let mut call = encoded(&samples()[0])[LENGTH_PREFIX_LEN..].to_vec();
        // Cut inside the shard number, at the op length, inside the op name.
        for end in [10, 11, 12, 15] {
            assert_eq!(Frame::decode_payload(&call[..end]), Err(FrameError::Truncated), "cut at {end}");
        }
        // An op length longer than what follows.
        call[11] = 200;
        assert_eq!(Frame::decode_payload(&call), Err(FrameError::Truncated));
        // Bytes after a tag without fields.
        assert_eq!(Frame::decode_payload(&[0, 0, 0, 0, 0, 0, 0, 1, TAG_REPLY_PONG, 0]), Err(FrameError::Truncated));
        // The same, with a length prefix that says so: a complete frame that is an error.
        assert_eq!(Frame::parse(&[0, 0, 0, 3, 1, 2, 3]), Err(FrameError::Truncated));
    }

    #[test]
    fn an_unknown_tag_is_an_error() {
        for tag in [0x00, 0x03, 0x80, 0x85, 0xff] {
            let payload = [0, 0, 0, 0, 0, 0, 0, 9, tag];
            assert_eq!(Frame::decode_payload(&payload), Err(FrameError::UnknownTag(tag)));
        }
    }

    #[test]
    fn text_fields_must_be_utf8() {
        let op = [&[0, 0, 0, 0, 0, 0, 0, 1, TAG_CALL_SHARD, 0, 1, 2][..], &[0xff, 0xfe]].concat();
        assert_eq!(Frame::decode_payload(&op), Err(FrameError::InvalidUtf8));
        let message = [&[0, 0, 0, 0, 0, 0, 0, 1, TAG_REPLY_ERROR][..], &[0xc3]].concat();
        assert_eq!(Frame::decode_payload(&message), Err(FrameError::InvalidUtf8));
    }

    #[test]
    fn an_oversize_length_is_refused_from_the_prefix_alone() {
        let len = MAX_FRAME_LEN + 1;
        assert_eq!(Frame::parse(&(len as u32).to_be_bytes()), Err(FrameError::TooLarge { len }));
        assert_eq!(Frame::parse(&[0xff; 4]), Err(FrameError::TooLarge { len: u32::MAX as usize }));
        // Exactly at the limit is fine (and incomplete here).
        assert_eq!(Frame::parse(&(MAX_FRAME_LEN as u32).to_be_bytes()), Ok(None));
    }

    #[test]
    fn oversize_frames_are_not_encoded() {
        let at_limit = vec![0u8; MAX_FRAME_LEN - PAYLOAD_HEADER_LEN];
        let frame = Frame::Reply { id: 1, reply: RpcReply::Shard(at_limit) };
        let bytes = encoded(&frame);
        assert_eq!(Frame::parse(&bytes).unwrap().unwrap().1, bytes.len());

        let over = Frame::Reply { id: 1, reply: RpcReply::Shard(vec![0u8; MAX_FRAME_LEN]) };
        let mut out = b"kept".to_vec();
        assert_eq!(over.encode(&mut out), Err(FrameError::TooLarge { len: MAX_FRAME_LEN + PAYLOAD_HEADER_LEN }));
        assert_eq!(out, b"kept", "nothing appended on error");

        let op = "x".repeat(MAX_OP_NAME_LEN + 1);
        let long_op = Frame::Call { id: 1, call: RpcCall::Shard { shard: 1, op, body: Vec::new() } };
        assert_eq!(long_op.encode(&mut out), Err(FrameError::OpNameTooLong(MAX_OP_NAME_LEN + 1)));
        assert_eq!(out, b"kept");
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic fuzz: every short byte string, and mutations of valid frames.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for frame in samples() {
            let bytes = encoded(&frame);
            for _ in 0..2_000 {
                let mut mutated = bytes.clone();
                let position = next() as usize % mutated.len();
                mutated[position] = next() as u8;
                mutated.truncate(next() as usize % (mutated.len() + 1));
                let _ = Frame::parse(&mutated);
                let _ = Frame::decode_payload(&mutated);
            }
        }
    }

    #[test]
    fn debug_hides_bodies() {
        let secret = b"{\"code\":\"s3cr3t\"}".to_vec();
        let call = RpcCall::Shard { shard: 2, op: "redeem_code".into(), body: secret.clone() };
        assert_eq!(format!("{call:?}"), "Shard { shard: 2, op: \"redeem_code\", body_len: 17 }");
        assert_eq!(format!("{:?}", RpcReply::Shard(secret)), "Shard { body_len: 17 }");
    }
}
