//! Dead letters: events a destination rejected or could not take within the
//! retry horizon, kept per destination under `data_dir/dead-letters/<name>`
//! (a [`SegmentLog`] of their own) until an operator replays them.
//!
//! Replay appends them to the main log again, addressed to that destination
//! only, so they are delivered with the same at-least-once guarantee; the
//! replayed ones are then marked so and no longer listed.

use std::path::{Path, PathBuf};

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use switchyard_log::{EventLog, LogError, LogOptions, LogReader, Record, SegmentLog, Seq};

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

/// A destination's dead-letter store.
pub struct DeadLetters {
    log: SegmentLog,
    replayed: PathBuf,
}

impl DeadLetters {
    /// Opens (or creates) the store in `dir`.
    ///
    /// # Errors
    ///
    /// I/O errors.
    pub fn open(dir: &Path) -> Result<DeadLetters, LogError> {
        let log =
            SegmentLog::open(dir, LogOptions { segment_bytes: 16 * 1024 * 1024, fsync: true, min_free_bytes: 0 })?;
        Ok(DeadLetters { log, replayed: dir.join("replayed.cursor") })
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
        self.log.append(vec![b.freeze()]).await.map(|_| ())
    }

    /// Dead letters not yet replayed, oldest first, at most `limit`.
    ///
    /// # Errors
    ///
    /// I/O errors or corruption.
    pub async fn pending(&self, limit: usize) -> Result<Vec<DeadLetter>, LogError> {
        let from = self.replayed_up_to();
        let mut reader = self.log.reader(from)?;
        let mut out = Vec::new();
        while out.len() < limit {
            let batch = reader.try_batch(limit - out.len()).await?;
            if batch.is_empty() {
                break;
            }
            for (seq, payload) in batch {
                out.push(parse(seq, &payload)?);
            }
        }
        Ok(out)
    }

    /// How many are waiting for replay.
    pub fn count(&self) -> u64 {
        self.log.end().saturating_sub(self.replayed_up_to())
    }

    /// Marks everything before `seq` as replayed.
    ///
    /// # Errors
    ///
    /// When the marker cannot be written.
    pub fn mark_replayed(&self, seq: Seq) -> std::io::Result<()> {
        let tmp = self.replayed.with_extension("tmp");
        std::fs::write(&tmp, seq.to_string())?;
        std::fs::rename(&tmp, &self.replayed)?;
        self.log.release(seq);
        Ok(())
    }

    /// Appends up to `limit` dead letters to `log`, each addressed to
    /// `destination` only, then marks them replayed. They are delivered
    /// again with the log's at-least-once guarantee.
    ///
    /// # Errors
    ///
    /// When they cannot be read, or `log` refuses the append (nothing is
    /// marked then). A failure to mark them afterwards is only logged: a
    /// later replay may repeat them, never lose them.
    pub async fn replay<L: EventLog>(&self, log: &L, destination: &str, limit: usize) -> Result<Replayed, LogError> {
        let pending = self.pending(limit).await?;
        let Some(last) = pending.last().map(|d| d.seq) else {
            return Ok(Replayed { replayed: 0, remaining: 0 });
        };
        let target: std::sync::Arc<str> = std::sync::Arc::from(destination);
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
        log.append(records).await?;
        if let Err(e) = self.mark_replayed(last + 1) {
            tracing::warn!(destination, error = %e, "cannot mark dead letters replayed");
        }
        tracing::info!(destination, replayed = pending.len(), "dead letters replayed");
        Ok(Replayed { replayed: pending.len() as u64, remaining: self.count() })
    }

    fn replayed_up_to(&self) -> Seq {
        std::fs::read_to_string(&self.replayed).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
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
