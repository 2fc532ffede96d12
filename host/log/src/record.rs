//! The on-disk form of a record.
//!
//! A record is `len: u32 LE | crc32: u32 LE | seq: u64 LE | payload`, where
//! `len` counts the payload and the CRC covers `seq` and the payload.

use bytes::{BufMut, BytesMut};

/// Bytes before the payload.
pub const HEADER: usize = 16;

/// Largest payload accepted when reading (guards against garbage lengths).
pub const MAX_PAYLOAD: usize = 16 * 1024 * 1024;

/// Appends one framed record to `out`.
pub fn frame(out: &mut BytesMut, seq: u64, payload: &[u8]) {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&seq.to_le_bytes());
    crc.update(payload);
    out.put_u32_le(payload.len() as u32);
    out.put_u32_le(crc.finalize());
    out.put_u64_le(seq);
    out.put_slice(payload);
}

/// What parsing a record at the start of `buf` found.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A whole, valid record of `len` bytes on disk.
    Record { seq: u64, payload_at: usize, len: usize },
    /// Not enough bytes: a torn tail (or the end).
    Incomplete,
    /// Bytes that are not a valid record.
    Corrupt(&'static str),
}

/// Parses the record at the start of `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    if buf.len() < HEADER {
        return Parsed::Incomplete;
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let seq = u64::from_le_bytes([buf[8], buf[9], buf[10], buf[11], buf[12], buf[13], buf[14], buf[15]]);
    if len > MAX_PAYLOAD {
        return Parsed::Corrupt("length out of range");
    }
    if buf.len() < HEADER + len {
        return Parsed::Incomplete;
    }
    let mut h = crc32fast::Hasher::new();
    h.update(&buf[8..16]);
    h.update(&buf[HEADER..HEADER + len]);
    if h.finalize() != crc {
        return Parsed::Corrupt("checksum mismatch");
    }
    Parsed::Record { seq, payload_at: HEADER, len: HEADER + len }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trip_and_corruption() {
        let mut out = BytesMut::new();
        frame(&mut out, 7, b"hello");
        assert_eq!(parse(&out), Parsed::Record { seq: 7, payload_at: HEADER, len: HEADER + 5 });
        assert_eq!(parse(&out[..HEADER + 4]), Parsed::Incomplete);
        let mut bad = out.to_vec();
        bad[HEADER] ^= 1;
        assert_eq!(parse(&bad), Parsed::Corrupt("checksum mismatch"));
    }
}
