//! Dead letters: events a destination rejected or could not take within the
//! retry horizon, kept per destination until an operator replays them —
//! where the log backend keeps them ([`EventLog::dead_letters`]): on this
//! node's disk under `data_dir/dead-letters/<name>` for the embedded log,
//! on the cluster for JetStream, so that any node lists and replays them.
//!
//! Replay appends them to the main log again, addressed to that destination
//! only, so they are delivered with the same at-least-once guarantee; the
//! replayed ones are then released and no longer listed.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use switchyard_log::{DeadLetterLog, EventLog, LogError, Record, Seq};

use crate::normalize::Envelope;
use crate::record::{decode_envelope, encode_envelope};

/// One dead letter.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub seq: Seq,
    pub reason: String,
    pub attempts: u32,
    /// When it was dead-lettered, ms since the epoch.
    pub failed_at_ms: i64,
    #[serde(skip)]
    pub event: Envelope,
    #[serde(rename = "messageId")]
    pub message_id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

/// What a replay did: how many went back to the log, and how many wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    pub replayed: u64,
    pub remaining: u64,
}

/// A destination's dead letters, encoded into its backend's store.
pub struct DeadLetters {
    store: Arc<dyn DeadLetterLog>,
}

impl DeadLetters {
    /// Dead letters kept in `store`.
    pub fn new(store: Arc<dyn DeadLetterLog>) -> DeadLetters {
        DeadLetters { store }
    }

    /// Stores `event` with why it failed.
    ///
    /// # Errors
    ///
    /// When it cannot be made durable.
    pub async fn add(&self, event: &Envelope, reason: &str, attempts: u32) -> Result<(), LogError> {
        let env = encode_envelope(event);
        let mut b = BytesMut::with_capacity(env.len() + reason.len() + 16);
        b.put_u32_le(reason.len() as u32);
        b.put_slice(reason.as_bytes());
        b.put_u32_le(attempts);
        b.put_i64_le(chrono::Utc::now().timestamp_millis());
        b.put_slice(&env);
        self.store.add(b.freeze()).await.map(|_| ())
    }

    /// Dead letters not yet replayed, oldest first, at most `limit`.
    ///
    /// # Errors
    ///
    /// When the store cannot be read.
    pub async fn pending(&self, limit: usize) -> Result<Vec<DeadLetter>, LogError> {
        Ok(self.read(limit).await?.0)
    }

    /// Up to `limit` stored dead letters, decoded, and one past the last
    /// one read. One damaged entry must not hide (or block the replay of)
    /// the others: it is skipped, said so, and released with them.
    async fn read(&self, limit: usize) -> Result<(Vec<DeadLetter>, Option<Seq>), LogError> {
        let stored = self.store.list(limit).await?;
        let end = stored.last().map(|(seq, _)| seq + 1);
        let letters = stored.into_iter().filter_map(|(seq, payload)| match parse(seq, &payload) {
            Ok(letter) => Some(letter),
            Err(e) => {
                tracing::error!(seq, error = %e, "skipping an undecodable dead letter");
                None
            }
        });
        Ok((letters.collect(), end))
    }

    /// How many are waiting for replay.
    ///
    /// # Errors
    ///
    /// When the store cannot be asked.
    pub async fn count(&self) -> Result<u64, LogError> {
        self.store.count().await
    }

    /// Appends up to `limit` dead letters to `log`, each addressed to
    /// `destination` only, then releases them. They are delivered again
    /// with the log's at-least-once guarantee.
    ///
    /// # Errors
    ///
    /// When they cannot be read, or `log` refuses the append (nothing is
    /// released then). A failure to release them afterwards is only
    /// logged: a later replay may repeat them, never lose them.
    pub async fn replay<L: EventLog>(&self, log: &L, destination: &str, limit: usize) -> Result<Replayed, LogError> {
        let (pending, end) = self.read(limit).await?;
        let Some(end) = end else {
            return Ok(Replayed { replayed: 0, remaining: 0 });
        };
        let target: Arc<str> = Arc::from(destination);
        let records = pending
            .iter()
            .map(|d| {
                let mut e = d.event.clone();
                e.only_for = Some(target.clone());
                // A replay is a new record, not a repeat of the event the
                // log took (and remembers) before: an id of its own.
                Record { id: fastrand::u64(..), order_key: 0, payload: encode_envelope(&e) }
            })
            .collect();
        if !pending.is_empty() {
            log.append(records).await?;
        }
        if let Err(e) = self.store.release(end).await {
            tracing::warn!(destination, error = %e, "cannot mark dead letters replayed");
        }
        tracing::info!(destination, replayed = pending.len(), "dead letters replayed");
        Ok(Replayed { replayed: pending.len() as u64, remaining: self.count().await? })
    }
}

fn parse(seq: Seq, p: &Bytes) -> Result<DeadLetter, LogError> {
    let corrupt =
        |reason: &str| LogError::Corrupt { segment: "dead-letters".into(), offset: seq, reason: reason.into() };
    let rl = u32::from_le_bytes(p.get(0..4).and_then(|s| s.try_into().ok()).ok_or_else(|| corrupt("short"))?) as usize;
    let reason = String::from_utf8_lossy(p.get(4..4 + rl).ok_or_else(|| corrupt("short"))?).into_owned();
    let at = 4 + rl;
    let attempts =
        u32::from_le_bytes(p.get(at..at + 4).and_then(|s| s.try_into().ok()).ok_or_else(|| corrupt("short"))?);
    let failed_at_ms =
        i64::from_le_bytes(p.get(at + 4..at + 12).and_then(|s| s.try_into().ok()).ok_or_else(|| corrupt("short"))?);
    let event = decode_envelope(p.get(at + 12..).ok_or_else(|| corrupt("short"))?).map_err(|e| corrupt(&e))?;
    Ok(DeadLetter {
        seq,
        reason,
        attempts,
        failed_at_ms,
        message_id: event.message_id.clone(),
        kind: event.kind.as_str(),
        event,
    })
}
