//! The one place plexus edits h2's output: debug data on h2's GOAWAY.
//!
//! gRPC clients learn that they pinged too often from a GOAWAY ENHANCE_YOUR_CALM whose debug
//! data says `too_many_pings` (gRFC A8); grpc-go and C-core double their keepalive time on it.
//! h2's server API sends GOAWAY only without debug data (`abrupt_shutdown(reason)`), and
//! writing a GOAWAY of our own beside h2's would leave h2's, without the debug data, as the
//! peer's last word. So when a driver arms it, the tap holds h2's next GOAWAY until the frame
//! is complete and writes it out again with the debug data added; every other byte passes
//! unchanged.
//!
//! This depends on how h2 frames its GOAWAY (one frame on stream 0, 8 bytes of payload). The
//! tests below pin the h2 versions it was checked against, so an h2 upgrade fails them until
//! someone checks again (`pinging_too_often_gets_goaway_enhance_your_calm` in
//! `core/tests/keepalive.rs` runs it against a real h2 client).

use super::{ConnectionEvents, FRAME_HEADER_LEN, FrameHead, FrameScanner, Piece, kind};

/// Largest GOAWAY the write path rewrites: every peer accepts 16 KiB frames (RFC 9113 §4.2).
const MAX_REWRITTEN_FRAME: usize = 16_384;

/// The rewrite of h2's next GOAWAY, once a driver armed one.
#[derive(Debug)]
pub(super) struct GoAwayRewrite {
    debug: bytes::Bytes,
    /// Bytes of the frame header in progress that went out before the rewrite started.
    head_sent: usize,
    /// The payload of the GOAWAY being rewritten, once its header is seen.
    capture: Option<Vec<u8>>,
    done: bool,
}

impl GoAwayRewrite {
    /// A rewrite adding `debug`, starting when `head_sent` bytes of a frame header (0 to 8)
    /// have already gone out unchanged.
    pub(super) fn new(debug: bytes::Bytes, head_sent: usize) -> GoAwayRewrite {
        debug_assert!(head_sent < FRAME_HEADER_LEN);
        GoAwayRewrite {
            debug,
            head_sent,
            capture: None,
            done: false,
        }
    }

    /// Takes h2's bytes `buf`, framed by `scanner`, into `owed`, with the debug data added to
    /// the first GOAWAY; reports each frame written to `events`.
    pub(super) fn take(
        &mut self,
        mut buf: &[u8],
        scanner: &mut FrameScanner,
        events: &ConnectionEvents,
        owed: &mut Vec<u8>,
    ) {
        while !buf.is_empty() {
            let (n, piece) = scanner.next(buf);
            let bytes = &buf[..n];
            match piece {
                Piece::Preface => owed.extend_from_slice(bytes),
                // Held in the scanner until the header is complete.
                Piece::Head(None) => {}
                Piece::Head(Some(head)) => {
                    events.on_frame_written(&head);
                    let sent = std::mem::take(&mut self.head_sent);
                    let candidate = sent == 0
                        && !self.done
                        && head.kind == kind::GOAWAY
                        && head.stream == 0
                        && head.len >= 8
                        && head.len as usize <= MAX_REWRITTEN_FRAME;
                    if candidate {
                        self.capture = Some(Vec::with_capacity(head.len as usize));
                    } else {
                        owed.extend_from_slice(&scanner.raw_head()[sent..]);
                    }
                }
                Piece::Payload { head, .. } => match &mut self.capture {
                    Some(payload) => {
                        payload.extend_from_slice(bytes);
                        if payload.len() == head.len as usize {
                            // h2's own debug data, if it ever sends some, wins.
                            let debug = if payload.len() > 8 {
                                &payload[8..]
                            } else {
                                &self.debug[..self.debug.len().min(MAX_REWRITTEN_FRAME - 8)]
                            };
                            let out = FrameHead {
                                len: (8 + debug.len()) as u32,
                                ..head
                            };
                            owed.extend_from_slice(&out.encode());
                            owed.extend_from_slice(&payload[..8]);
                            owed.extend_from_slice(debug);
                            self.capture = None;
                            self.done = true;
                        }
                    }
                    None => owed.extend_from_slice(bytes),
                },
            }
            buf = &buf[n..];
        }
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;

    use futures_io::AsyncWrite;

    use super::super::tests::{Stingy, block, frame, write_all};
    use super::super::{FLAG_ACK, FrameTap, Role, kind};

    /// h2 versions whose GOAWAY framing this rewrite was checked against (one GOAWAY frame on
    /// stream 0 with an 8-byte payload from `abrupt_shutdown`).
    const CHECKED_H2_VERSIONS: &[&str] = &["0.4.20"];

    /// Fails on an h2 upgrade until the rewrite is checked against the new version and the
    /// version is added above.
    #[test]
    fn h2_version_was_checked() {
        let lock = include_str!("../../../../Cargo.lock");
        let h2 = lock
            .split("[[package]]")
            .find(|p| p.contains("\nname = \"h2\"\n"))
            .expect("h2 in Cargo.lock");
        let version = h2
            .lines()
            .find_map(|l| l.strip_prefix("version = \""))
            .and_then(|v| v.strip_suffix('"'))
            .expect("h2's version");
        assert!(
            CHECKED_H2_VERSIONS.contains(&version),
            "h2 {version} is not among the versions the GOAWAY rewrite was checked against \
             ({CHECKED_H2_VERSIONS:?}): check core/src/proto/tap/goaway.rs against it"
        );
    }

    #[test]
    fn armed_goaway_gets_debug_data_wherever_it_is_cut() {
        let before = frame(kind::DATA, 0, 1, &[5; 40]);
        let mut payload = 7u32.to_be_bytes().to_vec();
        payload.extend(u32::from(h2::Reason::ENHANCE_YOUR_CALM).to_be_bytes());
        let goaway = frame(kind::GOAWAY, 0, 0, &payload);
        let after = frame(kind::PING, FLAG_ACK, 0, &[1; 8]);
        let mut expected_goaway = 7u32.to_be_bytes().to_vec();
        expected_goaway.extend(u32::from(h2::Reason::ENHANCE_YOUR_CALM).to_be_bytes());
        expected_goaway.extend(b"too_many_pings");
        for arm_at in 0..before.len() {
            for chunk in [1, 3, 8, 64] {
                let (mut tap, events) = FrameTap::new(Stingy::new(chunk), Role::Server);
                // Part of the frame before goes out unarmed, the rest after arming.
                write_all(&mut tap, &before[..arm_at]);
                events.arm_goaway_debug(bytes::Bytes::from_static(b"too_many_pings"));
                write_all(&mut tap, &before[arm_at..]);
                for piece in goaway.chunks(chunk) {
                    write_all(&mut tap, piece);
                }
                write_all(&mut tap, &after);
                block(|cx| Pin::new(&mut tap).poll_flush(cx)).unwrap();
                let mut expected = before.clone();
                expected.extend(frame(kind::GOAWAY, 0, 0, &expected_goaway));
                expected.extend(&after);
                assert_eq!(
                    tap.inner.written, expected,
                    "arm at {arm_at}, chunk {chunk}"
                );
            }
        }
    }
}
