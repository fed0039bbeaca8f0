//! The ingest: messages → validated records → windows on disk → acknowledgements.
//!
//! Three threads:
//! - the network thread ([`crate::mqtt`]) reads the broker into a bounded queue of
//!   `queue` messages and writes acknowledgements;
//! - this thread checks each message ([`crate::record::parse`], then the sensor's
//!   monotonic time), fills the open window and seals it after `window` (from its first
//!   message), once its payloads reach `window_bytes` or once it holds `window_records`
//!   messages, whichever comes first;
//! - the writer thread writes a sealed window through the exchange layer and commits it
//!   ([`crate::state`]); only then are its messages acknowledged.
//!
//! At most one window is being written while the next fills. When the writer falls
//! behind, this thread waits for it, the queue fills, the network thread stops reading
//! and the broker buffers: memory is bounded by the queue (× the largest message) plus
//! two windows (each about `window_bytes` of payload, held as parsed columns).
//!
//! The broker sends at most its in-flight limit of unacknowledged messages (mosquitto's
//! `max_inflight_messages`; `hpc/mqtt-local.sh` sets 32768), and this ingest holds up to
//! two windows and the queue unacknowledged: the limit must be at least
//! 2 × `window_records` + `queue`, or windows close only on their time. Under a flood the
//! limit is also what lets acknowledgements out promptly: rumqttc writes a queued PUBACK
//! only when it is not reading (its event loop picks one or the other), and it stops
//! reading once the broker stops sending.
//!
//! Delivery is at least once (a message is acknowledged only once its window is on disk)
//! and the output exactly once: a message is recognised by a 64-bit fingerprint of its
//! topic and payload (blake3). A message identical to one in the open, the pending or a
//! recent committed window is a redelivery: it is dropped (counted as a duplicate) and
//! acknowledged once the window holding its first copy is committed. Committed windows'
//! fingerprints are kept (in memory and in the state file) until every acknowledgement of
//! theirs has been written to the connection, and always for the last two windows; after a
//! restart, those read from the state file are kept until the broker delivers a message
//! that is not a redelivery (mosquitto resends every unacknowledged message, flagged DUP,
//! before new ones).

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant, SystemTime};

use twinflow_contract::stream;
use twinflow_exchange::{Attr, Compression, DatasetWriter, Format, Provenance, Values};

use crate::IngestError;
use crate::dead_letter::{self, DeadLetter};
use crate::mqtt::{self, AckRequest, AckToken, Connect, Incoming, Links, Settled};
use crate::record::{self, RejectKind, Rejection};
use crate::schema::Schema;
use crate::state::{self, RecentWindow, State};
use crate::window::{Columns, iso_time};

/// Everything `twin-kernel ingest` is asked to do.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Topic filters (QoS 1).
    pub topics: Vec<String>,
    /// Client id of the persistent session (the same across restarts).
    pub client_id: String,
    /// The records' schema.
    pub schema: Schema,
    /// Where the windows and the state go.
    pub out_dir: PathBuf,
    /// Dead-letter file (JSON lines).
    pub dead_letter: PathBuf,
    /// Window file format.
    pub format: Format,
    /// Compression of the window files.
    pub compression: Compression,
    /// A window is sealed this long after its first message...
    pub window: Duration,
    /// ... or once its payloads reach this many bytes.
    pub window_bytes: usize,
    /// ... or once it holds this many messages.
    pub window_records: usize,
    /// Messages the in-memory queue holds.
    pub queue: usize,
    /// Stop after this many windows.
    pub max_windows: Option<u64>,
    /// Stop after this long without a message.
    pub until_idle: Option<Duration>,
    /// How long the first connection may take.
    pub connect_timeout: Duration,
    /// A file created once the subscriptions are in place (a service's readiness).
    pub ready_file: Option<PathBuf>,
    /// Provenance attributes of the window files.
    pub provenance: Provenance,
}

/// Why the ingest stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// SIGTERM or SIGINT (the stop flag).
    Signal,
    /// `max_windows` windows written.
    MaxWindows,
    /// `until_idle` without a message.
    Idle,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Windows written.
    pub windows: u64,
    /// Records received (excluding redeliveries).
    pub records_in: u64,
    /// Records written.
    pub written: u64,
    /// Records dead-lettered.
    pub dead_lettered: u64,
    /// Redeliveries dropped.
    pub duplicates: u64,
    /// Payload bytes of the records received.
    pub bytes: u64,
    /// Why it stopped.
    pub reason: StopReason,
}

/// A window being filled.
#[derive(Debug)]
struct Open {
    index: u64,
    opened: Instant,
    opened_wall: f64,
    columns: Columns,
    dead: Vec<DeadLetter>,
    bytes: usize,
    /// Acknowledgement per message, and where each fingerprint is in it.
    acks: Vec<(AckToken, u64)>,
    fingerprints: HashMap<u64, usize>,
    duplicates: u64,
}

/// A window handed to the writer, not yet committed.
#[derive(Debug)]
struct Pending {
    index: u64,
    acks: Vec<(AckToken, u64)>,
    fingerprints: HashMap<u64, usize>,
}

/// A committed window whose fingerprints are still kept.
#[derive(Debug)]
struct Committed {
    index: u64,
    fingerprints: HashSet<u64>,
    /// Fingerprints whose acknowledgement is not written yet.
    unsettled: HashSet<u64>,
    /// Read from the state file at start (acknowledgements unknown).
    loaded: bool,
}

/// What the writer gets.
struct Sealed {
    index: u64,
    columns: Columns,
    dead: Vec<DeadLetter>,
    attrs: Vec<(String, Attr)>,
    state: State,
}

/// What the writer reports.
#[derive(Debug)]
struct Written {
    index: u64,
    path: PathBuf,
    /// The window's value buffers, emptied, for the next window to reuse: filling
    /// fresh memory (page faults, zeroing) costs as much as parsing.
    spare: Vec<Values>,
}

fn fingerprint(topic: &str, payload: &[u8]) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(&(topic.len() as u64).to_le_bytes());
    h.update(topic.as_bytes());
    h.update(payload);
    let bytes = h.finalize();
    u64::from_le_bytes(bytes.as_bytes()[..8].try_into().expect("8 bytes"))
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Windows always kept besides those with unsettled acknowledgements.
const KEEP_LAST: usize = 2;

struct Ingest<'a> {
    config: &'a IngestConfig,
    open: Option<Open>,
    pending: VecDeque<Pending>,
    committed: VecDeque<Committed>,
    last_time: HashMap<String, f64>,
    next_index: u64,
    /// Records of the last sealed window: the next window's columns reserve as much.
    last_records: usize,
    /// Emptied buffers of a written window.
    spare: Option<Vec<Values>>,
    sealed: u64,
    fresh_seen: bool,
    duplicates_between: u64,
    summary: Summary,
    acks: Sender<AckRequest>,
    to_writer: Option<Sender<Sealed>>,
    from_writer: Receiver<Result<Written, IngestError>>,
}

/// Runs the ingest until `stop` is set, `max_windows` windows are written or the stream
/// stays idle for `until_idle`.
pub fn run(config: &IngestConfig, stop: &AtomicBool) -> Result<Summary, IngestError> {
    let state = state::recover(&config.out_dir, &config.dead_letter, &config.client_id, config.format)?;
    tracing::info!(
        out_dir = %config.out_dir.display(), next_window = state.next_window,
        sensors = state.last_time.len(), "ingest state"
    );
    let (msg_tx, msg_rx) = mpsc::sync_channel::<Incoming>(config.queue.max(1));
    let (ack_tx, ack_rx) = mpsc::channel::<AckRequest>();
    let (settled_tx, settled_rx) = mpsc::channel::<Settled>();
    let finish = Arc::new(AtomicBool::new(false));
    let links = Links { messages: msg_tx, acks: ack_rx, settled: settled_tx, finish: finish.clone() };
    let connect = Connect {
        host: config.host.clone(),
        port: config.port,
        client_id: config.client_id.clone(),
        topics: config.topics.clone(),
        subscribed: state.topics.clone(),
        connect_timeout: config.connect_timeout,
        ready_file: config.ready_file.clone(),
    };
    let network = std::thread::Builder::new()
        .name("mqtt".into())
        .spawn(move || mqtt::run(&connect, &links))
        .map_err(|source| IngestError::Io { path: PathBuf::from("(thread)"), action: "start", source })?;
    let (to_writer, writer_rx) = mpsc::channel::<Sealed>();
    let (done_tx, from_writer) = mpsc::channel();
    let writer_config = config.clone();
    let writer = std::thread::Builder::new()
        .name("writer".into())
        .spawn(move || {
            for sealed in writer_rx {
                let result = write_window(&writer_config, sealed);
                let failed = result.is_err();
                if done_tx.send(result).is_err() || failed {
                    break;
                }
            }
        })
        .map_err(|source| IngestError::Io { path: PathBuf::from("(thread)"), action: "start", source })?;

    let mut ingest = Ingest {
        config,
        open: None,
        pending: VecDeque::new(),
        committed: state
            .recent
            .iter()
            .map(|r| Committed {
                index: r.window,
                fingerprints: r.fingerprints.iter().copied().collect(),
                unsettled: HashSet::new(),
                loaded: true,
            })
            .collect(),
        last_time: state.last_time.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        next_index: state.next_window,
        last_records: 0,
        spare: None,
        sealed: 0,
        fresh_seen: false,
        duplicates_between: 0,
        summary: Summary {
            windows: 0,
            records_in: 0,
            written: 0,
            dead_lettered: 0,
            duplicates: 0,
            bytes: 0,
            reason: StopReason::Signal,
        },
        acks: ack_tx,
        to_writer: Some(to_writer),
        from_writer,
    };
    let outcome = ingest.main_loop(&msg_rx, &settled_rx, stop);
    // Unblock the network thread (messages still queued are not acknowledged: the broker
    // redelivers them to the next run), let it write the acknowledgements and disconnect.
    drop(msg_rx);
    let outcome = outcome.and_then(|reason| ingest.drain().map(|()| reason));
    finish.store(true, Ordering::Release);
    ingest.to_writer = None;
    let network_result = network.join().unwrap_or_else(|_| Err(IngestError::Panicked("mqtt")));
    let _ = writer.join();
    let reason = outcome?;
    network_result?;
    ingest.summary.reason = reason;
    Ok(ingest.summary)
}

impl Ingest<'_> {
    fn main_loop(
        &mut self,
        messages: &Receiver<Incoming>,
        settled: &Receiver<Settled>,
        stop: &AtomicBool,
    ) -> Result<StopReason, IngestError> {
        let mut last_message = Instant::now();
        loop {
            while let Ok(s) = settled.try_recv() {
                self.settle(s);
            }
            while let Ok(done) = self.from_writer.try_recv() {
                self.committed_window(done?);
            }
            if stop.load(Ordering::Relaxed) {
                tracing::info!("stop requested: sealing the open window");
                self.seal()?;
                return Ok(StopReason::Signal);
            }
            if let Some(idle) = self.config.until_idle
                && last_message.elapsed() >= idle
            {
                tracing::info!(idle = ?idle, "no message for the idle limit: sealing the open window");
                self.seal()?;
                return Ok(StopReason::Idle);
            }
            let mut wait = Duration::from_millis(50);
            if let Some(open) = &self.open {
                let age = open.opened.elapsed();
                if age >= self.config.window {
                    self.seal()?;
                    if self.reached_max() {
                        return Ok(StopReason::MaxWindows);
                    }
                    continue;
                }
                wait = wait.min(self.config.window - age);
            }
            match messages.recv_timeout(wait) {
                Ok(m) => {
                    last_message = Instant::now();
                    self.handle(m);
                    let full =
                        |o: &Open| o.bytes >= self.config.window_bytes || o.acks.len() >= self.config.window_records;
                    if self.open.as_ref().is_some_and(full) {
                        self.seal()?;
                        if self.reached_max() {
                            return Ok(StopReason::MaxWindows);
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                // The network thread ended: its error is reported by `run`.
                Err(RecvTimeoutError::Disconnected) => return Ok(StopReason::Signal),
            }
        }
    }

    fn reached_max(&self) -> bool {
        self.config.max_windows.is_some_and(|n| self.sealed >= n)
    }

    fn ack(&self, token: AckToken, window: u64, fingerprint: u64) {
        let _ = self.acks.send(AckRequest { token, window, fingerprint });
    }

    fn settle(&mut self, s: Settled) {
        if let Some(c) = self.committed.iter_mut().find(|c| c.index == s.window) {
            c.unsettled.remove(&s.fingerprint);
        }
    }

    fn handle(&mut self, m: Incoming) {
        let fp = fingerprint(&m.topic, &m.payload);
        if !m.dup {
            self.fresh_seen = true;
        }
        // A redelivery of a message already held?
        if let Some(c) = self.committed.iter_mut().find(|c| c.fingerprints.contains(&fp)) {
            c.unsettled.insert(fp);
            let index = c.index;
            self.ack(m.token, index, fp);
            self.duplicate();
            return;
        }
        if let Some(open) = &mut self.open
            && let Some(&at) = open.fingerprints.get(&fp)
        {
            open.acks[at].0 = m.token;
            self.duplicate();
            return;
        }
        for p in &mut self.pending {
            if let Some(&at) = p.fingerprints.get(&fp) {
                p.acks[at].0 = m.token;
                self.duplicate();
                return;
            }
        }
        let schema = &self.config.schema;
        let reserve = self.last_records;
        let spare = &mut self.spare;
        let open = self.open.get_or_insert_with(|| {
            let index = self.next_index;
            self.next_index += 1;
            Open {
                index,
                opened: Instant::now(),
                opened_wall: unix_now(),
                // As many records as the last window: no reallocation (a copy of tens of
                // MB) while this one fills at the same rate.
                columns: match spare.take() {
                    Some(buffers) => Columns::reuse(schema, buffers, reserve),
                    None => Columns::with_capacity(schema, reserve),
                },
                dead: Vec::new(),
                bytes: 0,
                acks: Vec::new(),
                fingerprints: HashMap::new(),
                duplicates: 0,
            }
        });
        open.bytes += m.payload.len();
        open.fingerprints.insert(fp, open.acks.len());
        open.acks.push((m.token, fp));
        let checked = record::parse(schema, &m.payload).and_then(|r| match self.last_time.get(&r.sensor) {
            Some(&last) if r.time <= last => Err(Rejection::new(
                RejectKind::TimeNotIncreasing,
                format!("sensor `{}`: time {} is not after its previous record's {last}", r.sensor, r.time),
            )),
            _ => Ok(r),
        });
        match checked {
            Ok(r) => {
                self.last_time.insert(r.sensor.clone(), r.time);
                open.columns.push(schema, r);
            }
            Err(rejection) => {
                tracing::debug!(topic = %m.topic, reason = %rejection, "dead letter");
                open.dead.push(DeadLetter {
                    topic: m.topic,
                    received: unix_now(),
                    rejection,
                    payload: m.payload.to_vec(),
                });
            }
        }
    }

    fn duplicate(&mut self) {
        self.summary.duplicates += 1;
        match &mut self.open {
            Some(open) => open.duplicates += 1,
            None => self.duplicates_between += 1,
        }
    }

    /// Hands the open window (if any) to the writer, waiting while another is written.
    fn seal(&mut self) -> Result<(), IngestError> {
        let Some(open) = self.open.take() else { return Ok(()) };
        // One window at a time in the writer: its commit must be known before this
        // window's state is computed (the state lists the committed windows).
        while !self.pending.is_empty() {
            let done = self.from_writer.recv().map_err(|_| IngestError::Panicked("writer"))?;
            self.committed_window(done?);
        }
        self.sealed += 1;
        self.last_records = open.columns.len();
        let written = open.columns.len() as u64;
        let dead = open.dead.len() as u64;
        let duplicates = open.duplicates + std::mem::take(&mut self.duplicates_between);
        self.summary.records_in += written + dead;
        self.summary.written += written;
        self.summary.dead_lettered += dead;
        self.summary.bytes += open.bytes as u64;
        // Fingerprints still needed: windows with unsettled acknowledgements, those read
        // at start until a new message arrived, and the last ones.
        let fresh = self.fresh_seen;
        let n = self.committed.len();
        let mut k = 0;
        self.committed.retain(|c| {
            k += 1;
            k + KEEP_LAST > n || !c.unsettled.is_empty() || (c.loaded && !fresh)
        });
        let mut recent: Vec<RecentWindow> = self
            .committed
            .iter()
            .map(|c| RecentWindow { window: c.index, fingerprints: c.fingerprints.iter().copied().collect() })
            .collect();
        recent.push(RecentWindow { window: open.index, fingerprints: open.fingerprints.keys().copied().collect() });
        let state = State {
            next_window: open.index + 1,
            last_time: self.last_time.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            recent,
            topics: self.config.topics.clone(),
            ..State::fresh(&self.config.client_id)
        };
        let schema = &self.config.schema;
        let mut attrs: Vec<(String, Attr)> = vec![
            (stream::WINDOW_INDEX_ATTR.into(), Attr::I64(vec![open.index as i64])),
            (stream::RECORDS_IN_ATTR.into(), Attr::I64(vec![(written + dead) as i64])),
            (stream::RECORDS_WRITTEN_ATTR.into(), Attr::I64(vec![written as i64])),
            (stream::RECORDS_DEAD_LETTERED_ATTR.into(), Attr::I64(vec![dead as i64])),
            (stream::RECORDS_DUPLICATE_ATTR.into(), Attr::I64(vec![duplicates as i64])),
            ("payload_bytes".into(), Attr::I64(vec![open.bytes as i64])),
            ("window_opened".into(), Attr::F64(vec![open.opened_wall])),
            ("window_sealed".into(), Attr::F64(vec![unix_now()])),
            ("mqtt_topics".into(), Attr::Str(self.config.topics.join(" "))),
            ("mqtt_client_id".into(), Attr::Str(self.config.client_id.clone())),
            ("dead_letter_file".into(), Attr::Str(self.config.dead_letter.display().to_string())),
        ];
        if let Some((t0, t1)) = open.columns.time_span() {
            attrs.push((stream::TIME_MIN_ATTR.into(), Attr::F64(vec![t0])));
            attrs.push((stream::TIME_MAX_ATTR.into(), Attr::F64(vec![t1])));
            if let (Some(a), Some(b)) = (iso_time(schema, t0), iso_time(schema, t1)) {
                attrs.push(("time_coverage_start".into(), Attr::Str(a)));
                attrs.push(("time_coverage_end".into(), Attr::Str(b)));
            }
        }
        tracing::debug!(window = open.index, records = written, dead_lettered = dead, "sealed");
        self.pending.push_back(Pending { index: open.index, acks: open.acks, fingerprints: open.fingerprints });
        let sealed = Sealed { index: open.index, columns: open.columns, dead: open.dead, attrs, state };
        self.to_writer.as_ref().and_then(|w| w.send(sealed).ok()).ok_or(IngestError::Panicked("writer"))
    }

    /// A window is on disk: acknowledge its messages.
    fn committed_window(&mut self, done: Written) {
        self.spare = Some(done.spare);
        let Some(p) = self.pending.pop_front() else { return };
        debug_assert_eq!(p.index, done.index);
        for &(token, fp) in &p.acks {
            self.ack(token, p.index, fp);
        }
        self.summary.windows += 1;
        let fingerprints: HashSet<u64> = p.fingerprints.into_keys().collect();
        self.committed.push_back(Committed {
            index: p.index,
            unsettled: fingerprints.clone(),
            fingerprints,
            loaded: false,
        });
        tracing::info!(window = p.index, path = %done.path.display(), "window committed");
    }

    /// Waits for the windows still being written.
    fn drain(&mut self) -> Result<(), IngestError> {
        while !self.pending.is_empty() {
            let done = self.from_writer.recv().map_err(|_| IngestError::Panicked("writer"))?;
            self.committed_window(done?);
        }
        Ok(())
    }
}

/// Writes and commits one window (the writer thread).
fn write_window(config: &IngestConfig, sealed: Sealed) -> Result<Written, IngestError> {
    let t0 = Instant::now();
    let path = state::window_path(&config.out_dir, sealed.index, config.format);
    let written = sealed.columns.len();
    let dead = sealed.dead.len();
    let mut data = sealed.columns.into_dataset(&config.schema, &config.provenance, sealed.attrs);
    // The header without cloning the values (a window can be tens of MB).
    let values: Vec<Values> =
        data.variables.iter_mut().map(|v| std::mem::replace(&mut v.values, Values::empty_for(v.dtype))).collect();
    let mut w = DatasetWriter::create(&path, &data, &config.compression)?;
    for (v, values) in data.variables.iter().zip(&values) {
        let shape = data.shape_of(v);
        w.write(&v.name, &vec![0; shape.len()], &shape, values)?;
    }
    let partial = w.close()?;
    let dead_letter_bytes = dead_letter::append(&config.dead_letter, sealed.index, &sealed.dead)?;
    State { dead_letter_bytes, ..sealed.state }.save(&config.out_dir)?;
    let path = partial.commit()?;
    state::sync_dir(&config.out_dir)?;
    tracing::info!(
        window = sealed.index,
        records_in = written + dead,
        written,
        dead_lettered = dead,
        seconds = t0.elapsed().as_secs_f64(),
        "wrote {}",
        path.display()
    );
    let spare = values
        .into_iter()
        .map(|mut v| {
            match &mut v {
                Values::Num(x) => x.clear(),
                Values::Str(x) => x.clear(),
            }
            v
        })
        .collect();
    Ok(Written { index: sealed.index, path, spare })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_separate_topic_and_payload() {
        assert_eq!(fingerprint("a", b"bc"), fingerprint("a", b"bc"));
        assert_ne!(fingerprint("a", b"bc"), fingerprint("ab", b"c"));
        assert_ne!(fingerprint("a", b"bc"), fingerprint("a", b"bd"));
    }
}
