//! Several records in one JetStream message.
//!
//! Every JetStream operation costs a round of the client's and the
//! server's machinery (a publish with its ack, a delivery, an ack per
//! destination) and, with `sync_interval: always`, an fsync: one message
//! per event held ingest to a few thousand events/s where the embedded log
//! takes a hundred thousand. So an append packs the records of one
//! partition into messages of up to [`MAX_RECORDS`] records and
//! [`MAX_BYTES`] bytes, each record as a little-endian `u32` length and its
//! bytes, and a consumer unpacks them and acks a message once every record
//! in it is finished.
//!
//! A record's sequence number is its message's stream sequence shifted
//! left by [`INDEX_BITS`], plus its index in the message: ordered like the
//! stream, unique, and the message is found from it.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use switchyard_log::Seq;

/// Bits of a record's sequence number that hold its index in its message.
pub const INDEX_BITS: u32 = 16;
/// Most records in one message (fits [`INDEX_BITS`]).
pub const MAX_RECORDS: usize = 1000;
const _: () = assert!(MAX_RECORDS < 1 << INDEX_BITS);
/// Most payload bytes in one message, under NATS's default `max_payload`
/// (1 MiB) with room for headers.
pub const MAX_BYTES: usize = 900 * 1024;

/// The sequence number of record `index` of the message at `stream_seq`.
pub fn seq(stream_seq: u64, index: usize) -> Seq {
    (stream_seq << INDEX_BITS) | index as u64
}

/// The stream sequence of the message holding record `seq`.
pub fn message_of(seq: Seq) -> u64 {
    seq >> INDEX_BITS
}

/// Packs `payloads` into one message body.
pub fn encode<'a>(payloads: impl Iterator<Item = &'a Bytes>) -> Bytes {
    let mut out = BytesMut::new();
    for p in payloads {
        out.put_u32_le(p.len() as u32);
        out.put_slice(p);
    }
    out.freeze()
}

/// The records of a message body, sharing its buffer. A body cut short or
/// otherwise not of this layout yields the records before the damage, and
/// `false`.
pub fn decode(body: &Bytes) -> (Vec<Bytes>, bool) {
    let mut records = Vec::new();
    let mut rest = body.clone();
    while rest.has_remaining() {
        if rest.remaining() < 4 {
            return (records, false);
        }
        let len = rest.get_u32_le() as usize;
        if len > rest.remaining() {
            return (records, false);
        }
        records.push(rest.split_to(len));
    }
    (records, true)
}

/// The `Nats-Msg-Id` of a message holding the records with `ids`: the same
/// for the same records in the same order, so a message published again
/// (after a timeout, or a client's retry of the same request) is dropped
/// by the stream's duplicate window.
pub fn message_id(ids: impl Iterator<Item = u64>) -> String {
    // FNV-1a over the ids' bytes, two lanes for 128 bits.
    let (mut a, mut b): (u64, u64) = (0xcbf2_9ce4_8422_2325, 0x6c62_272e_07bb_0142);
    for id in ids {
        for byte in id.to_le_bytes() {
            a = (a ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
            b = (b ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3).rotate_left(5);
        }
    }
    format!("{a:016x}{b:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damage_is_reported() {
        let records = [Bytes::from("one"), Bytes::new(), Bytes::from(vec![7u8; 300])];
        let body = encode(records.iter());
        assert_eq!(decode(&body), (records.to_vec(), true));
        let cut = body.slice(..body.len() - 1);
        assert_eq!(decode(&cut), (records[..2].to_vec(), false));
        assert_eq!(decode(&Bytes::from_static(&[1, 0])), (Vec::new(), false));
        assert_eq!(decode(&Bytes::new()), (Vec::new(), true));
    }

    #[test]
    fn sequence_numbers_keep_stream_order_and_find_their_message() {
        assert!(seq(5, MAX_RECORDS - 1) < seq(6, 0));
        assert_eq!(message_of(seq(123_456, 999)), 123_456);
    }

    #[test]
    fn message_ids_depend_on_the_records_and_their_order() {
        let id = |ids: &[u64]| message_id(ids.iter().copied());
        assert_eq!(id(&[1, 2, 3]), id(&[1, 2, 3]));
        assert_ne!(id(&[1, 2, 3]), id(&[3, 2, 1]));
        assert_ne!(id(&[1, 2]), id(&[1, 2, 3]));
        assert_eq!(id(&[1]).len(), 32);
    }
}
