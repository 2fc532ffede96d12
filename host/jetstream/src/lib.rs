//! The NATS JetStream backend of Switchyard's [`EventLog`] seam: several
//! Switchyard nodes share one stream of events and one durable consumer
//! per destination, so any node accepts any event and every destination's
//! events are delivered once across all nodes (at least once on failures).
//!
//! # Layout on the server
//!
//! - **The events stream** (`<stream>`, default `SWITCHYARD_EVENTS`):
//!   subjects `<prefix>.ev.<partition>`, where the partition is a hash of
//!   the record's order key (the event's user) modulo
//!   [`Options::partitions`]. An append packs the records of one partition
//!   into as few messages as it can ([`pack`]): one JetStream operation per
//!   event held ingest to a few thousand events/s. File storage,
//!   [`Options::replicas`] replicas, **interest** retention (a message is
//!   deleted once every destination's consumer acked it) and **`discard =
//!   new`**: a full stream refuses the append, ingest answers 503, and no
//!   undelivered event is ever evicted silently. `max_age` and `max_bytes`
//!   bound it; see [`Options`].
//! - **One durable pull consumer per destination**, named after it and
//!   shared by every node (the server splits its messages between them),
//!   explicit acks, progress acks while a message is held
//!   ([`JetStreamConsumer`]).
//! - **The counters** (`<stream>_COUNTS`): records appended and records
//!   each consumer finished, so that backlogs are exact in records on
//!   every node (the `counts` module).
//! - **The dead letters** (`<stream>_DEAD`, subject `<prefix>.dead.<destination>`),
//!   kept until replayed and seen by every node (the `letters` module).
//! - **The dedupe ids** of the last day: every append's ids as one
//!   message in `<stream>_IDSET`, which every node reads into a set of its
//!   own ([`Dedupe::Set`], the default), or one message per id in
//!   `<stream>_IDS`, read back by direct get ([`Dedupe::Lookup`]). See
//!   [`ids`].
//!
//! # Acknowledgements
//!
//! [`EventLog::append`] publishes its messages pipelined, each with a
//! `Nats-Msg-Id` derived from its records' ids, and resolves only once the
//! stream acknowledged every one of them: ingest answers 200 only then. A
//! publish whose ack timed out or whose stream lost its leader is
//! published again with the same id (the stream's duplicate window makes
//! that safe) until [`Options::publish_timeout`] has passed; then the
//! append fails and ingest answers 503. A record's sequence number is its
//! message's stream sequence and its index in it ([`pack::seq`]): ordered
//! like the stream, with gaps, which the seam allows.

mod consumer;
mod counts;
pub mod ids;
mod letters;
pub mod pack;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, stream};
use futures_util::StreamExt as _;
use switchyard_log::{Appended, ConsumerOptions, DeadLetterLog, EventLog, LogError, Record, Seq};

pub use consumer::JetStreamConsumer;
pub use ids::Dedupe;

/// How this node reaches the cluster and how the stream is shaped.
#[derive(Debug, Clone)]
pub struct Options {
    /// NATS servers to connect to (`nats://host:port`); any one of a
    /// cluster suffices, the client learns the others.
    pub servers: Vec<String>,
    /// A token for the servers, if they need one.
    pub token: Option<String>,
    /// The events stream's name; the others are named after it.
    pub stream: String,
    /// The first token of every subject this node publishes.
    pub subject_prefix: String,
    /// Replicas of each stream and consumer: 1, or 3 (5) on a cluster.
    pub replicas: usize,
    /// Records older than this are deleted even if undelivered: keep it
    /// above the retry horizon plus the longest outage to tolerate.
    pub max_age: Duration,
    /// The events stream's size bound in bytes (0: none); at the bound,
    /// appends are refused (503), never old records evicted.
    pub max_bytes: i64,
    /// Partitions of the subject space (fixed once the stream exists).
    pub partitions: u32,
    /// JetStream's own `Nats-Msg-Id` window, which also makes a
    /// re-published record after a timeout safe.
    pub duplicate_window: Duration,
    /// How dedupe beyond that window works.
    pub dedupe: Dedupe,
    /// The dedupe window of [`Dedupe::Set`] and [`Dedupe::Lookup`].
    pub dedupe_window: Duration,
    /// The bound in ids of [`Dedupe::Lookup`]'s stream (on the servers).
    pub dedupe_max_ids: i64,
    /// The bound in ids of [`Dedupe::Set`]'s set (in every node's memory).
    pub dedupe_set_max_ids: usize,
    /// How long the server waits for an ack before handing a record to
    /// another node; progress acks extend it while a record is held.
    pub ack_wait: Duration,
    /// How long an append keeps publishing again before it fails.
    pub publish_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            servers: vec!["nats://127.0.0.1:4222".into()],
            token: None,
            stream: "SWITCHYARD_EVENTS".into(),
            subject_prefix: "switchyard".into(),
            replicas: 1,
            max_age: Duration::from_secs(72 * 3600),
            max_bytes: 0,
            partitions: 8,
            duplicate_window: Duration::from_secs(600),
            dedupe: Dedupe::Set,
            dedupe_window: Duration::from_secs(24 * 3600),
            dedupe_max_ids: 50_000_000,
            dedupe_set_max_ids: switchyard_log::DedupeOptions::default().max_ids,
            ack_wait: Duration::from_secs(30),
            publish_timeout: Duration::from_secs(10),
        }
    }
}

/// How often the stream's and the consumers' state is read from the
/// server. Between reads, appends and acks of this node adjust the
/// backlogs; what other nodes do shows at the next read.
const REFRESH_EVERY: Duration = Duration::from_millis(500);

/// A log on a JetStream stream shared by every node.
pub struct JetStreamLog {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) client: async_nats::Client,
    pub(crate) js: jetstream::Context,
    pub(crate) events: stream::Stream,
    ids: Option<ids::Ids>,
    dead: stream::Stream,
    options: Options,
    /// The stream's last sequence + 1, from acks and refreshes.
    end: AtomicU64,
    /// Set when the stream refused an append for being full; cleared by
    /// the next refresh that finds room.
    full: AtomicBool,
    /// Records appended and finished per consumer: the backlogs.
    pub(crate) counts: counts::Counts,
    /// Consumers by name with what the server says of them, refreshed.
    consumers: Mutex<HashMap<String, ConsumerState>>,
    /// How many times the connection was lost.
    pub(crate) disconnects: Arc<AtomicU64>,
    /// The runtime the log was opened on, for work that must outlive a
    /// destination's own executor (unpinning its partitions).
    pub(crate) runtime: tokio::runtime::Handle,
}

/// A consumer as the server last described it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ConsumerState {
    pub(crate) paused: bool,
    /// Until then `paused` is what this node just set, not what a refresh
    /// read.
    pub(crate) settled_at: Option<std::time::Instant>,
}

/// Why the cluster could not be set up at start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot reach NATS at {servers}: {reason}")]
    Connect { servers: String, reason: String },
    #[error("cannot create or update JetStream stream `{stream}`: {reason}")]
    Stream { stream: String, reason: String },
}

impl JetStreamLog {
    /// Connects to the servers and creates (or updates) the streams.
    ///
    /// # Errors
    ///
    /// [`OpenError`] when the servers cannot be reached or refuse the
    /// streams' configuration (a JetStream-less server, a partition count
    /// that differs from the existing stream's, …).
    pub async fn open(options: Options) -> Result<JetStreamLog, OpenError> {
        let servers = options.servers.join(",");
        let mut connect = async_nats::ConnectOptions::new()
            .name("switchyard")
            .connection_timeout(Duration::from_secs(5))
            .max_reconnects(None);
        if let Some(token) = &options.token {
            connect = connect.token(token.clone());
        }
        // A lost connection is noticed within a fraction of `ack_wait`
        // (the default ping every 60 s would notice it long after the
        // server handed this node's messages to another), and counted, so
        // that an ordered consumer never delivers what it held across it.
        let disconnects = Arc::new(AtomicU64::new(0));
        let counter = disconnects.clone();
        connect = connect
            .ping_interval((options.ack_wait / 4).clamp(Duration::from_millis(500), Duration::from_secs(10)))
            .event_callback(move |event| {
                let counter = counter.clone();
                async move {
                    if matches!(event, async_nats::Event::Disconnected) {
                        counter.fetch_add(1, Ordering::SeqCst);
                        tracing::warn!("lost the connection to NATS; reconnecting");
                    }
                }
            });
        let addrs: Vec<async_nats::ServerAddr> = options
            .servers
            .iter()
            .map(|s| s.parse())
            .collect::<Result<_, _>>()
            .map_err(|e: std::io::Error| OpenError::Connect { servers: servers.clone(), reason: e.to_string() })?;
        let client = connect
            .connect(addrs)
            .await
            .map_err(|e| OpenError::Connect { servers: servers.clone(), reason: e.to_string() })?;
        let js = jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(5))
            .max_ack_inflight(20_000)
            .backpressure_on_inflight(true)
            .build(client.clone());
        let stream_err = |name: &str, e: &dyn std::fmt::Display| OpenError::Stream {
            stream: name.to_owned(),
            reason: e.to_string(),
        };
        let events = js
            .create_or_update_stream(stream::Config {
                name: options.stream.clone(),
                subjects: vec![format!("{}.ev.*", options.subject_prefix)],
                storage: stream::StorageType::File,
                num_replicas: options.replicas,
                retention: stream::RetentionPolicy::Interest,
                discard: stream::DiscardPolicy::New,
                max_age: options.max_age,
                max_bytes: if options.max_bytes > 0 { options.max_bytes } else { -1 },
                duplicate_window: options.duplicate_window.min(options.max_age),
                ..Default::default()
            })
            .await
            .map_err(|e| stream_err(&options.stream, &e))?;
        let end = pack::seq(events.state.last_sequence + 1, 0);
        let events = js.get_stream(&options.stream).await.map_err(|e| stream_err(&options.stream, &e))?;
        let ids = ids::Ids::open(&js, &options).await.map_err(|e| stream_err(&ids::stream_name(&options), &e))?;
        let dead =
            letters::open_stream(&js, &options).await.map_err(|e| stream_err(&letters::stream_name(&options), &e))?;
        tracing::info!(
            servers,
            stream = options.stream,
            replicas = options.replicas,
            max_age_hours = options.max_age.as_secs() / 3600,
            max_bytes = options.max_bytes,
            partitions = options.partitions,
            dedupe = ?options.dedupe,
            "events go to a JetStream stream"
        );
        let counts = counts::Counts::open(&js, &options)
            .await
            .map_err(|e| stream_err(&format!("{}_COUNTS", options.stream), &e))?;
        let inner = Arc::new(Inner {
            client,
            js,
            events,
            ids,
            dead,
            options,
            end: AtomicU64::new(end),
            full: AtomicBool::new(false),
            counts,
            consumers: Mutex::default(),
            disconnects,
            runtime: tokio::runtime::Handle::current(),
        });
        inner.refresh().await;
        tokio::spawn(every(Arc::downgrade(&inner), REFRESH_EVERY, |inner| async move { inner.refresh().await }));
        tokio::spawn(every(Arc::downgrade(&inner), counts::FLUSH_EVERY, |inner| async move {
            inner.counts.flush().await;
        }));
        Ok(JetStreamLog { inner })
    }
}

impl Inner {
    pub(crate) fn consumers(&self) -> std::sync::MutexGuard<'_, HashMap<String, ConsumerState>> {
        self.consumers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads the stream's end and fullness and every consumer's backlog.
    async fn refresh(&self) {
        match self.events.get_info().await {
            Ok(info) => {
                self.end.fetch_max(pack::seq(info.state.last_sequence + 1, 0), Ordering::Relaxed);
                let max = info.config.max_bytes;
                let room = max <= 0 || info.state.bytes < (max as u64).saturating_sub(max as u64 / 100);
                if room {
                    self.full.store(false, Ordering::Relaxed);
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot read the stream's state"),
        }
        let mut consumers = self.events.consumers();
        let mut seen = HashMap::new();
        while let Some(info) = consumers.next().await {
            match info {
                Ok(info) => {
                    // An ordered destination's partitions count as one.
                    let state: &mut ConsumerState =
                        seen.entry(consumer::destination_of(&info.name).to_owned()).or_default();
                    state.paused |= info.paused;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cannot list the stream's consumers");
                    return;
                }
            }
        }
        let untracked: Vec<String> = seen.keys().filter(|n| self.counts.backlog(n).is_none()).cloned().collect();
        {
            let mut consumers = self.consumers();
            let now = std::time::Instant::now();
            for (name, state) in &mut seen {
                if let Some(mine) = consumers.get(name)
                    && mine.settled_at.is_some_and(|t| t > now)
                {
                    (state.paused, state.settled_at) = (mine.paused, mine.settled_at);
                }
            }
            *consumers = seen;
        }
        // Consumers of destinations this node does not run (removed from
        // the config, or run elsewhere) are counted from their totals.
        for name in untracked {
            if let Err(e) = self.counts.track(&name, false).await {
                tracing::debug!(consumer = name, error = e, "cannot read a consumer's count");
            }
        }
        self.counts.refresh().await;
    }
}

/// Runs `work` every `period` until the log is dropped.
async fn every<F, Fut>(inner: std::sync::Weak<Inner>, period: Duration, work: F)
where
    F: Fn(Arc<Inner>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        work(inner).await;
    }
}

/// Whether `url` is a NATS server address (`nats://host:port`, `host:port`,
/// `tls://…`), as `[log.jetstream] servers` needs.
pub fn is_server_url(url: &str) -> bool {
    url.parse::<async_nats::ServerAddr>().is_ok_and(|a| !a.host().is_empty())
}

/// A JetStream consumer name for a destination: names may not hold `.`,
/// `*`, `>`, whitespace or path separators, which destination names may.
pub(crate) fn consumer_name(destination: &str) -> String {
    destination.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

fn unavailable(e: impl std::fmt::Display) -> LogError {
    LogError::Io(format!("JetStream: {e}"))
}

impl EventLog for JetStreamLog {
    type Consumer = JetStreamConsumer;

    async fn append(&self, records: Vec<Record>) -> Result<Appended, LogError> {
        let inner = &self.inner;
        // Disconnected, a publish would wait in the client's buffer until
        // the deadline: answer at once, and the SDK retries.
        self.accepting()?;
        // Repeats within the batch, then ids accepted within the window.
        let mut duplicates = Vec::new();
        let mut firsts: HashMap<u64, usize> = HashMap::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            if firsts.insert(r.id, i).is_some() {
                duplicates.push(i);
            }
        }
        let mut fresh: Vec<(usize, &Record)> =
            records.iter().enumerate().filter(|(i, r)| firsts.get(&r.id) == Some(i)).collect();
        if let Some(ids) = &inner.ids {
            let keys: Vec<u64> = fresh.iter().map(|(_, r)| r.id).collect();
            let seen = ids.seen(&keys).await.map_err(unavailable)?;
            let mut keep = seen.iter();
            fresh.retain(|(i, _)| {
                let dup = keep.next().copied().unwrap_or(false);
                if dup {
                    duplicates.push(*i);
                }
                !dup
            });
        }
        let written = publish_all(inner, &fresh, &mut duplicates).await?;
        if let Err(e) = inner.counts.appended(written.len() as u64).await {
            // They are durable; only the backlogs shown are short of them.
            tracing::warn!(error = e, "cannot count appended events; backlogs show fewer");
        }
        if let Some(ids) = &inner.ids {
            let keys: Vec<u64> = written.iter().map(|(_, id)| *id).collect();
            ids.remember(&keys).await;
        }
        duplicates.sort_unstable();
        let first = written.iter().map(|(seq, _)| *seq).min().unwrap_or_else(|| self.end());
        Ok(Appended { first, duplicates })
    }

    fn end(&self) -> Seq {
        self.inner.end.load(Ordering::Relaxed)
    }

    fn accepting(&self) -> Result<(), LogError> {
        if self.inner.client.connection_state() != async_nats::connection::State::Connected {
            return Err(unavailable("not connected to the NATS servers"));
        }
        if self.inner.full.load(Ordering::Relaxed) {
            return Err(LogError::Full(format!("JetStream stream `{}` is full", self.inner.options.stream)));
        }
        Ok(())
    }

    async fn open_consumer(&self, name: &str, options: ConsumerOptions) -> Result<JetStreamConsumer, LogError> {
        let consumer = JetStreamConsumer::open(self.inner.clone(), name, options).await?;
        self.inner.consumers().entry(consumer_name(name)).or_default();
        Ok(consumer)
    }

    fn consumers(&self) -> Vec<String> {
        let mut names: Vec<String> = self.inner.consumers().keys().cloned().collect();
        names.sort();
        names
    }

    fn backlog(&self, name: &str) -> Option<u64> {
        self.inner.counts.backlog(&consumer_name(name))
    }

    async fn remove_consumer(&self, name: &str) -> Result<Option<u64>, LogError> {
        let name = consumer_name(name);
        let existing = self.existing_consumers(&name).await?;
        if existing.is_empty() {
            return Ok(None);
        }
        let backlog = self.inner.counts.backlog(&name).unwrap_or(0);
        for c in &existing {
            self.inner.events.delete_consumer(c).await.map_err(unavailable)?;
        }
        if let Err(e) = self.letters_of(&name).delete_all().await {
            tracing::warn!(consumer = name, error = %e, "cannot delete a purged destination's dead letters");
        }
        self.inner.consumers().remove(&name);
        if let Err(e) = self.inner.counts.forget(&name).await {
            tracing::warn!(consumer = name, error = e, "cannot delete a purged consumer's count");
        }
        Ok(Some(backlog))
    }

    async fn dead_letters(&self, name: &str) -> Result<Arc<dyn DeadLetterLog>, LogError> {
        Ok(Arc::new(self.letters_of(name)))
    }

    fn shared(&self) -> bool {
        true
    }

    /// Pauses the consumer on the server (until a resume: ten years), so
    /// that no node is handed its records; what a node holds already it
    /// keeps, and finishes once resumed.
    async fn pause(&self, name: &str, paused: bool) -> Result<(), LogError> {
        let name = consumer_name(name);
        for c in self.existing_consumers(&name).await? {
            let reply = if paused {
                let until = time::OffsetDateTime::now_utc() + time::Duration::days(3650);
                self.inner.events.pause_consumer(&c, until).await.map(|_| ())
            } else {
                self.inner.events.resume_consumer(&c).await.map(|_| ())
            };
            reply.map_err(unavailable)?;
        }
        let mut consumers = self.inner.consumers();
        let state = consumers.entry(name).or_default();
        state.paused = paused;
        // A refresh already under way read the state before this change.
        state.settled_at = Some(std::time::Instant::now() + Duration::from_secs(3));
        Ok(())
    }

    fn paused(&self, name: &str) -> Option<bool> {
        self.inner.consumers().get(&consumer_name(name)).map(|c| c.paused)
    }
}

impl JetStreamLog {
    /// Destination `name`'s dead letters on the cluster.
    fn letters_of(&self, name: &str) -> letters::StreamDeadLetters {
        let inner = &self.inner;
        letters::StreamDeadLetters::new(inner.js.clone(), inner.dead.clone(), &inner.options.subject_prefix, name)
    }

    /// The JetStream consumers destination consumer `name` has on the
    /// stream: its one, or its partitions' when ordered.
    async fn existing_consumers(&self, name: &str) -> Result<Vec<String>, LogError> {
        let mut existing = Vec::new();
        for c in consumer::all_consumers(&self.inner.options, name) {
            if consumer::info_if_any(&self.inner, &c).await?.is_some() {
                existing.push(c);
            }
        }
        Ok(existing)
    }
}

/// Packs `records` into messages, one or more per partition ([`pack`]),
/// publishes them pipelined, each with a `Nats-Msg-Id` derived from its
/// records' ids, and waits for every ack; publishes again what timed out,
/// with the same id, until the publish timeout. A partition's second
/// message goes out only once its first is stored (in waves: every
/// partition's first message, then every second one, …), so that a
/// republished message never lands behind a later one of its partition
/// and per-user order holds in the stream. Returns the written
/// records' sequence numbers and ids; the records of a message the stream
/// took for a repeat of one published before this append go to
/// `duplicates`.
///
/// # Errors
///
/// When some message is still not acknowledged at the deadline, or the
/// stream refused it (full: [`LogError::Full`]).
async fn publish_all(
    inner: &Inner,
    records: &[(usize, &Record)],
    duplicates: &mut Vec<usize>,
) -> Result<Vec<(Seq, u64)>, LogError> {
    let messages = group(inner, records);
    let deadline = tokio::time::Instant::now() + inner.options.publish_timeout;
    let mut written = Vec::with_capacity(records.len());
    let waves = messages.iter().map(|m| m.wave + 1).max().unwrap_or(0);
    for wave in 0..waves {
        // Messages still to publish, and whether each was published before
        // (then a "duplicate" ack means that try landed).
        let todo = messages.iter().enumerate().filter(|(_, m)| m.wave == wave).map(|(k, _)| (k, false)).collect();
        publish_wave(inner, records, &messages, todo, deadline, &mut written, duplicates).await?;
    }
    Ok(written)
}

/// Publishes `todo` of `messages` pipelined until each is acknowledged
/// (see [`publish_all`]).
async fn publish_wave(
    inner: &Inner,
    records: &[(usize, &Record)],
    messages: &[Outgoing],
    mut todo: Vec<(usize, bool)>,
    deadline: tokio::time::Instant,
    written: &mut Vec<(Seq, u64)>,
    duplicates: &mut Vec<usize>,
) -> Result<(), LogError> {
    let mut last_error = String::new();
    while !todo.is_empty() {
        if tokio::time::Instant::now() >= deadline {
            return Err(unavailable(format!(
                "{} of the request's messages not acknowledged in {:?}: {last_error}",
                todo.len(),
                inner.options.publish_timeout
            )));
        }
        let mut acks = Vec::with_capacity(todo.len());
        for &(k, retried) in &todo {
            let m = &messages[k];
            let message = jetstream::message::PublishMessage::build().payload(m.body.clone()).message_id(&m.id);
            let ack = inner.js.send_publish(m.subject.clone(), message).await;
            acks.push((k, retried, ack));
        }
        let mut again = Vec::new();
        for (k, retried, ack) in acks {
            let result = match ack {
                Ok(future) => future.await,
                Err(e) => Err(e),
            };
            let m = &messages[k];
            match result {
                Ok(ack) if ack.duplicate && !retried => duplicates.extend(m.records.iter().map(|r| records[*r].0)),
                Ok(ack) => {
                    inner.end.fetch_max(pack::seq(ack.sequence + 1, 0), Ordering::Relaxed);
                    written.extend(
                        m.records.iter().enumerate().map(|(i, r)| (pack::seq(ack.sequence, i), records[*r].1.id)),
                    );
                }
                Err(e) => {
                    let text = e.to_string();
                    if is_full(&text) {
                        inner.full.store(true, Ordering::Relaxed);
                        return Err(LogError::Full(format!(
                            "JetStream stream `{}` is full: {text}",
                            inner.options.stream
                        )));
                    }
                    last_error = text;
                    again.push((k, true));
                }
            }
        }
        if !again.is_empty() {
            tracing::debug!(count = again.len(), error = last_error, "publishing again with the same ids");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        todo = again;
    }
    Ok(())
}

/// One message to publish: its subject, body, `Nats-Msg-Id`, and the
/// indexes (into the append's fresh records) of the records it holds.
struct Outgoing {
    subject: String,
    body: bytes::Bytes,
    id: String,
    records: Vec<usize>,
    /// Its place among its partition's messages.
    wave: usize,
}

/// The records grouped by partition, in order, and cut into messages of at
/// most [`pack::MAX_RECORDS`] records and [`pack::MAX_BYTES`] bytes.
fn group(inner: &Inner, records: &[(usize, &Record)]) -> Vec<Outgoing> {
    let partitions = u64::from(inner.options.partitions.max(1));
    let mut by_partition: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for (k, (_, r)) in records.iter().enumerate() {
        by_partition.entry(r.order_key % partitions).or_default().push(k);
    }
    let mut out = Vec::new();
    for (partition, ks) in by_partition {
        let mut chunk: Vec<usize> = Vec::new();
        let mut bytes = 0;
        let mut wave = 0;
        let mut flush = |chunk: &mut Vec<usize>| {
            if chunk.is_empty() {
                return;
            }
            let taken = std::mem::take(chunk);
            out.push(Outgoing {
                subject: format!("{}.ev.{partition}", inner.options.subject_prefix),
                body: pack::encode(taken.iter().map(|k| &records[*k].1.payload)),
                id: pack::message_id(taken.iter().map(|k| records[*k].1.id)),
                records: taken,
                wave,
            });
            wave += 1;
        };
        for k in ks {
            let len = records[k].1.payload.len() + 4;
            if !chunk.is_empty() && (chunk.len() >= pack::MAX_RECORDS || bytes + len > pack::MAX_BYTES) {
                flush(&mut chunk);
                bytes = 0;
            }
            chunk.push(k);
            bytes += len;
        }
        flush(&mut chunk);
    }
    out
}

/// Whether a publish error says the stream is at its bounds.
fn is_full(error: &str) -> bool {
    let e = error.to_ascii_lowercase();
    e.contains("maximum bytes") || e.contains("maximum messages") || e.contains("resource limits")
}

/// The pull consumer configuration of a destination.
pub(crate) fn consumer_config(options: &Options, name: &str, max_ack_pending: i64) -> pull::Config {
    pull::Config {
        durable_name: Some(name.to_owned()),
        description: Some("a Switchyard destination".into()),
        deliver_policy: jetstream::consumer::DeliverPolicy::New,
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        ack_wait: options.ack_wait,
        max_deliver: -1,
        max_ack_pending,
        num_replicas: options.replicas,
        ..Default::default()
    }
}
