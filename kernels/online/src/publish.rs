//! Publishing the simulator's events to MQTT (QoS 1), paced and resumable.
//!
//! Events go out in event order at `rate` per second of wall clock (0: as fast as the
//! broker acknowledges). The state file (`JSON`, rewritten atomically every
//! [`STATE_EVERY`] acknowledgements and at the end) records how many events the broker
//! acknowledged, in order (mosquitto acknowledges a connection's QoS-1 publications in
//! the order they arrive): a restarted simulator continues after the last acknowledged
//! event. The events it had sent without an acknowledgement are sent again, byte for byte
//! the same (events are pure functions of the seed and their number), and the ingest
//! drops them as redeliveries; so every event is counted once in `published`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Outgoing, Packet, QoS};
use serde::{Deserialize, Serialize};
use twinflow_calo::Scratch;

use crate::sim::DetectorSim;
use crate::{OnlineError, write_atomic};

/// Acknowledgements between two writes of the state file.
pub const STATE_EVERY: u64 = 50;

/// Where and how to publish.
#[derive(Debug, Clone)]
pub struct PublishConfig {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Topic of the events.
    pub topic: String,
    /// MQTT client id.
    pub client_id: String,
    /// Events per second of wall clock (0: as fast as possible).
    pub rate: f64,
    /// The state file.
    pub state: PathBuf,
    /// How long the first connection may take.
    pub connect_timeout: Duration,
}

/// What has been published (the state file).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishState {
    /// Events acknowledged by the broker (events `0..published`).
    pub published: u64,
    /// Of those, events published with a defect (dead-lettered by the ingest).
    pub invalid: u64,
    /// Every event of the run is published.
    pub complete: bool,
}

impl PublishState {
    /// The state in `path`, or a fresh one when it does not exist.
    pub fn load(path: &std::path::Path) -> Result<Self, OnlineError> {
        if path.exists() { crate::read_json(path) } else { Ok(Self::default()) }
    }
}

fn save(sim: &DetectorSim, path: &std::path::Path, published: u64) -> Result<PublishState, OnlineError> {
    let state = PublishState {
        published,
        invalid: (0..published).filter(|&e| sim.is_invalid(e)).count() as u64,
        complete: published >= sim.config().events,
    };
    let text = serde_json::to_vec_pretty(&state).expect("the state serialises");
    write_atomic(path, &text)?;
    Ok(state)
}

/// Publishes the events not yet acknowledged according to the state file, until all are
/// or `stop` is set (then the events in flight are waited for, at most 10 s).
pub fn publish(sim: &DetectorSim, config: &PublishConfig, stop: &AtomicBool) -> Result<PublishState, OnlineError> {
    let start = PublishState::load(&config.state)?.published;
    let total = sim.config().events;
    if start >= total {
        return save(sim, &config.state, start);
    }
    let broker = format!("{}:{}", config.host, config.port);
    let unreachable = |reason: String| OnlineError::Broker { broker: broker.clone(), reason };
    let mut options = MqttOptions::new(&config.client_id, &config.host, config.port);
    options.set_keep_alive(Duration::from_secs(30)).set_max_packet_size(1 << 24, 1 << 24).set_inflight(64);
    let (client, mut connection) = Client::new(options, 64);
    tracing::info!(broker = %broker, topic = %config.topic, first_event = start, events = total, rate = config.rate, "publishing");

    let counter = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let stop_sender = Arc::new(AtomicBool::new(false));
    let handle = {
        let (client, topic, rate, sim) = (client.clone(), config.topic.clone(), config.rate, sim.clone());
        let (counter, done, flag) = (counter.clone(), done.clone(), stop_sender.clone());
        std::thread::spawn(move || {
            let mut scratch = Scratch::default();
            let t0 = Instant::now();
            for event in start..total {
                if flag.load(Ordering::Acquire) {
                    break;
                }
                if rate > 0.0 {
                    let due = t0 + Duration::from_secs_f64((event - start) as f64 / rate);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                }
                if client.publish(topic.as_str(), QoS::AtLeastOnce, false, sim.payload(event, &mut scratch)).is_err() {
                    break;
                }
                counter.fetch_add(1, Ordering::AcqRel);
            }
            done.store(true, Ordering::Release);
        })
    };
    let started = Instant::now();
    let (mut connected, mut acked, mut since_save) = (false, 0_u64, 0_u64);
    let mut drain_deadline = None;
    let result = loop {
        if stop.load(Ordering::Acquire) && drain_deadline.is_none() {
            stop_sender.store(true, Ordering::Release);
            drain_deadline = Some(Instant::now() + Duration::from_secs(10));
        }
        if done.load(Ordering::Acquire) && acked >= counter.load(Ordering::Acquire) {
            break Ok(());
        }
        if drain_deadline.is_some_and(|d| Instant::now() > d) {
            tracing::warn!(acked, "stopping with publications unacknowledged; they are sent again on restart");
            break Ok(());
        }
        match connection.recv_timeout(Duration::from_millis(100)) {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => connected = true,
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => {
                acked += 1;
                since_save += 1;
                if since_save >= STATE_EVERY {
                    save(sim, &config.state, start + acked)?;
                    since_save = 0;
                }
            }
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(e)) => {
                if !connected && started.elapsed() < config.connect_timeout {
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
                break Err(unreachable(e.to_string()));
            }
        }
    };
    stop_sender.store(true, Ordering::Release);
    // The sender may block on a full request channel: disconnecting frees it.
    let _ = client.try_disconnect();
    for _ in 0..50 {
        match connection.recv_timeout(Duration::from_millis(20)) {
            Ok(Ok(Event::Outgoing(Outgoing::Disconnect))) | Ok(Err(_)) => break,
            _ => {}
        }
    }
    // Dropping the connection ends a publish call blocked on a full request channel.
    drop(connection);
    let _ = handle.join();
    let state = save(sim, &config.state, start + acked)?;
    result?;
    tracing::info!(published = state.published, invalid = state.invalid, complete = state.complete, "published");
    Ok(state)
}
