//! MLLP framing: `0x0B <message> 0x1C 0x0D`.
//!
//! Lenient on input: bytes before a start block are discarded and counted; a
//! frame ends at `0x1C` (the following `0x0D` is consumed when it comes, and
//! its absence is tolerated unless strict framing is on). Check-then-parse:
//! nothing is copied until a whole frame is there. A frame that grows past
//! `max_frame_bytes` without an end block is reported as [`Frame::Oversized`]
//! with only its head kept; the connection is then closed by the caller, so
//! a huge frame is never buffered whole.

use bytes::{Buf, Bytes, BytesMut};
use tokio::time::Instant;
use tokio_util::codec::{Decoder, Encoder};

/// Start block.
pub const START: u8 = 0x0B;
/// End block.
pub const END: u8 = 0x1C;
/// Carriage return after the end block.
pub const CR: u8 = 0x0D;
/// How much of an oversized frame is kept to answer it (enough for MSH).
pub const OVERSIZED_HEAD_BYTES: usize = 4096;

/// What the decoder yields.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A complete frame's payload.
    Message(Bytes),
    /// A frame larger than the limit; only its head was kept.
    Oversized(Bytes),
}

/// Framing errors that end the connection.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The end block was not followed by CR and strict framing is on.
    #[error("end block not followed by carriage return")]
    MissingCarriageReturn,
    /// Socket error.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// The MLLP codec; also tracks when the current frame started, for the
/// partial-frame timeout.
#[derive(Debug)]
pub struct MllpCodec {
    max_frame_bytes: usize,
    strict: bool,
    in_frame: bool,
    /// Bytes of the current frame already scanned for an end block.
    scanned: usize,
    /// A CR may follow the last end block and is not junk.
    after_end: bool,
    /// Discarded bytes outside frames.
    junk_bytes: u64,
    frame_started: Option<Instant>,
}

impl MllpCodec {
    /// A codec with the given limits.
    pub fn new(max_frame_bytes: usize, strict: bool) -> Self {
        MllpCodec {
            max_frame_bytes,
            strict,
            in_frame: false,
            scanned: 0,
            after_end: false,
            junk_bytes: 0,
            frame_started: None,
        }
    }

    /// When the frame in progress started (`None` between frames).
    pub fn frame_started(&self) -> Option<Instant> {
        self.frame_started
    }

    /// Bytes discarded outside frames so far.
    pub fn junk_bytes(&self) -> u64 {
        self.junk_bytes
    }
}

impl Decoder for MllpCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        loop {
            if !self.in_frame {
                if self.after_end && !buf.is_empty() {
                    self.after_end = false;
                    if buf[0] == CR {
                        buf.advance(1);
                        continue;
                    }
                    if self.strict {
                        return Err(CodecError::MissingCarriageReturn);
                    }
                }
                match buf.iter().position(|b| *b == START) {
                    None => {
                        self.junk_bytes += buf.len() as u64;
                        buf.clear();
                        return Ok(None);
                    }
                    Some(pos) => {
                        self.junk_bytes += pos as u64;
                        buf.advance(pos + 1);
                        self.in_frame = true;
                        self.scanned = 0;
                        self.frame_started = Some(Instant::now());
                    }
                }
            }
            match buf[self.scanned..].iter().position(|b| *b == END) {
                Some(rel) => {
                    let end = self.scanned + rel;
                    if end > self.max_frame_bytes {
                        return Ok(Some(self.oversized(buf)));
                    }
                    let payload = buf.split_to(end).freeze();
                    buf.advance(1);
                    self.in_frame = false;
                    self.after_end = true;
                    self.frame_started = None;
                    if !buf.is_empty() {
                        // Check the CR now so that the next call starts clean.
                        self.after_end = false;
                        if buf[0] == CR {
                            buf.advance(1);
                        } else if self.strict {
                            return Err(CodecError::MissingCarriageReturn);
                        }
                    }
                    return Ok(Some(Frame::Message(payload)));
                }
                None => {
                    self.scanned = buf.len();
                    if buf.len() > self.max_frame_bytes {
                        return Ok(Some(self.oversized(buf)));
                    }
                    buf.reserve(4096.min(self.max_frame_bytes + 1 - buf.len()));
                    return Ok(None);
                }
            }
        }
    }
}

impl MllpCodec {
    fn oversized(&mut self, buf: &mut BytesMut) -> Frame {
        let head = Bytes::copy_from_slice(&buf[..OVERSIZED_HEAD_BYTES.min(buf.len())]);
        buf.clear();
        self.in_frame = false;
        self.frame_started = None;
        Frame::Oversized(head)
    }
}

/// Encodes one payload as an MLLP frame.
#[derive(Debug, Default)]
pub struct MllpEncoder;

impl Encoder<&[u8]> for MllpEncoder {
    type Error = std::io::Error;

    fn encode(&mut self, item: &[u8], dst: &mut BytesMut) -> Result<(), std::io::Error> {
        dst.reserve(item.len() + 3);
        dst.extend_from_slice(&[START]);
        dst.extend_from_slice(item);
        dst.extend_from_slice(&[END, CR]);
        Ok(())
    }
}

/// Frames `payload` into a new buffer.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(payload.len() + 3);
    v.push(START);
    v.extend_from_slice(payload);
    v.push(END);
    v.push(CR);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(codec: &mut MllpCodec, chunks: &[&[u8]]) -> Vec<Frame> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for c in chunks {
            buf.extend_from_slice(c);
            while let Some(f) = codec.decode(&mut buf).unwrap() {
                out.push(f);
            }
        }
        out
    }

    #[tokio::test]
    async fn junk_before_start_is_discarded_and_counted() {
        let mut c = MllpCodec::new(1024, false);
        let f = decode_all(&mut c, &[b"junk\x0bMSH|x\x1c\x0d"]);
        assert_eq!(f, vec![Frame::Message(Bytes::from_static(b"MSH|x"))]);
        assert_eq!(c.junk_bytes(), 4);
    }

    #[tokio::test]
    async fn frames_split_at_every_byte_decode_the_same() {
        let input = b"\x0bA\x1c\x0d\x0bBB\x1c\x0d\x0bCCC\x1c\x0d";
        for split in 1..input.len() {
            let mut c = MllpCodec::new(1024, false);
            let f = decode_all(&mut c, &[&input[..split], &input[split..]]);
            assert_eq!(f.len(), 3, "split at {split}");
            assert_eq!(c.junk_bytes(), 0, "split at {split}");
        }
        let mut c = MllpCodec::new(1024, false);
        let chunks: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(decode_all(&mut c, &chunks).len(), 3);
        assert_eq!(c.junk_bytes(), 0);
    }

    #[tokio::test]
    async fn missing_cr_is_tolerated_when_lenient_and_fatal_when_strict() {
        let mut c = MllpCodec::new(1024, false);
        let f = decode_all(&mut c, &[b"\x0bA\x1c\x0bB\x1c"]);
        assert_eq!(f.len(), 2);
        let mut c = MllpCodec::new(1024, true);
        let mut buf = BytesMut::from(&b"\x0bA\x1c\x0bB\x1c"[..]);
        assert!(c.decode(&mut buf).is_err());
    }

    #[tokio::test]
    async fn oversized_frame_keeps_only_its_head() {
        let mut c = MllpCodec::new(2048, false);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(b"\x0bMSH|^~\\&|A|B|C|D|||ADT^A01|1|P|2.5\r");
        let mut got = None;
        for _ in 0..100 {
            buf.extend_from_slice(&[b'x'; 100]);
            if let Some(f) = c.decode(&mut buf).unwrap() {
                got = Some(f);
                break;
            }
        }
        match got {
            Some(Frame::Oversized(head)) => {
                assert!(head.starts_with(b"MSH|"));
                assert!(head.len() <= OVERSIZED_HEAD_BYTES);
            }
            other => panic!("expected oversized, got {other:?}"),
        }
        assert!(buf.is_empty());
    }

    #[tokio::test]
    async fn empty_frame_is_a_frame() {
        let mut c = MllpCodec::new(1024, false);
        let f = decode_all(&mut c, &[b"\x0b\x1c\x0d"]);
        assert_eq!(f, vec![Frame::Message(Bytes::new())]);
    }
}
