//! The on-disk form of records and of the events inside them.
//!
//! A record is `len: u32 LE | crc32: u32 LE | seq: u64 LE | payload`, where
//! `len` counts the payload and the CRC covers `seq` and the payload.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use crate::spec::{Envelope, EventType};

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

const VERSION: u8 = 1;

/// Serializes an event for the log.
pub fn encode_envelope(e: &Envelope) -> Bytes {
    let integrations = e.integrations.as_ref().and_then(|m| serde_json::to_string(m).ok());
    let mut b = BytesMut::with_capacity(e.json.len() + e.message_id.len() + 64);
    b.put_u8(VERSION);
    b.put_u8(kind_code(e.kind));
    b.put_i64_le(e.timestamp_ms);
    put_str(&mut b, Some(&e.message_id));
    put_str(&mut b, e.name.as_deref());
    put_str(&mut b, e.user_id.as_deref());
    put_str(&mut b, e.anonymous_id.as_deref());
    put_str(&mut b, Some(&e.source));
    put_str(&mut b, integrations.as_deref());
    put_str(&mut b, e.only_for.as_deref());
    put_str(&mut b, Some(&e.json));
    b.freeze()
}

/// Reads an event written by [`encode_envelope`].
///
/// # Errors
///
/// A description of what is malformed.
pub fn decode_envelope(mut b: &[u8]) -> Result<Envelope, String> {
    let version = take(&mut b, 1)?[0];
    if version != VERSION {
        return Err(format!("unknown record version {version}"));
    }
    let kind = kind_of(take(&mut b, 1)?[0]).ok_or("unknown event type")?;
    let ts = take(&mut b, 8)?;
    let timestamp_ms = i64::from_le_bytes(ts.try_into().map_err(|_| "timestamp")?);
    let message_id = get_str(&mut b)?.ok_or("missing messageId")?;
    let name = get_str(&mut b)?;
    let user_id = get_str(&mut b)?;
    let anonymous_id = get_str(&mut b)?;
    let source = get_str(&mut b)?.ok_or("missing source")?;
    let integrations = match get_str(&mut b)? {
        Some(s) => serde_json::from_str::<serde_json::Value>(&s).ok().and_then(|v| v.as_object().cloned()),
        None => None,
    };
    let only_for = get_str(&mut b)?.map(|s| Arc::from(s.as_str()));
    let json = get_str(&mut b)?.ok_or("missing json")?;
    Ok(Envelope {
        kind,
        message_id,
        name,
        user_id,
        anonymous_id,
        timestamp_ms,
        source: Arc::from(source.as_str()),
        integrations,
        json,
        only_for,
    })
}

fn kind_code(k: EventType) -> u8 {
    match k {
        EventType::Identify => 0,
        EventType::Track => 1,
        EventType::Page => 2,
        EventType::Screen => 3,
        EventType::Group => 4,
        EventType::Alias => 5,
    }
}

fn kind_of(c: u8) -> Option<EventType> {
    EventType::ALL.get(c as usize).copied()
}

fn put_str(b: &mut BytesMut, s: Option<&str>) {
    match s {
        None => b.put_u32_le(u32::MAX),
        Some(s) => {
            b.put_u32_le(s.len() as u32);
            b.put_slice(s.as_bytes());
        }
    }
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    if b.len() < n {
        return Err("truncated event".into());
    }
    let (head, rest) = b.split_at(n);
    *b = rest;
    Ok(head)
}

fn get_str(b: &mut &[u8]) -> Result<Option<String>, String> {
    let len = u32::from_le_bytes(take(b, 4)?.try_into().map_err(|_| "length")?);
    if len == u32::MAX {
        return Ok(None);
    }
    let bytes = take(b, len as usize)?;
    String::from_utf8(bytes.to_vec()).map(Some).map_err(|_| "invalid UTF-8".into())
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

    #[test]
    fn envelope_round_trip() {
        let mut integrations = serde_json::Map::new();
        integrations.insert("All".into(), false.into());
        let e = Envelope {
            kind: EventType::Page,
            message_id: "m".into(),
            name: Some("Home".into()),
            user_id: None,
            anonymous_id: Some("a".into()),
            timestamp_ms: -5,
            source: Arc::from("web"),
            integrations: Some(integrations),
            json: "{\"type\":\"page\"}".into(),
            only_for: Some(Arc::from("hook")),
        };
        assert_eq!(decode_envelope(&encode_envelope(&e)).unwrap(), e);
        assert!(decode_envelope(&encode_envelope(&e)[..10]).is_err());
    }
}
