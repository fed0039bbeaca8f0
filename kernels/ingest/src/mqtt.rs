//! The network thread: one MQTT 3.1.1 connection (rumqttc) with QoS 1 subscriptions, a
//! persistent session (clean session off, fixed client id) and manual acknowledgements.
//!
//! Messages go into a bounded queue ([`std::sync::mpsc::sync_channel`]): when the queue is
//! full the thread blocks, stops reading the socket, and the broker buffers (TCP flow
//! control, then the broker's queue of the session), so memory stays bounded whatever
//! the rate.
//!
//! Acknowledgements come back from the ingest once a window is on disk. A PUBACK names
//! only a packet id, which the broker reuses once acknowledged, so an acknowledgement is
//! sent only on the connection its message arrived on ([`AckToken::epoch`]): after a
//! reconnection the broker redelivers what was not acknowledged (with the same ids), the
//! ingest recognises the redeliveries by their fingerprint and acknowledges those. rumqttc
//! itself drops PUBACKs still queued when a connection breaks (`EventLoop::clean`). Every
//! PUBACK written to the socket is reported back ([`Settled`]), so the ingest knows when a
//! window's fingerprints are no longer needed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender, TryRecvError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rumqttc::{Client, ConnectionError, Event, MqttOptions, Outgoing, Packet, Publish, QoS, RecvTimeoutError};

use crate::IngestError;

/// Identifies a message for its acknowledgement: the connection it arrived on and its
/// packet id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckToken {
    /// Connection number (from 1; increases at every CONNACK).
    pub epoch: u64,
    /// MQTT packet id.
    pub pkid: u16,
}

/// A message from the broker.
#[derive(Debug)]
pub struct Incoming {
    /// Topic.
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// For the acknowledgement.
    pub token: AckToken,
    /// The broker's DUP flag: a redelivery of a message sent before.
    pub dup: bool,
}

/// A request to acknowledge a message, tagged with what the ingest tracks it by.
#[derive(Debug, Clone, Copy)]
pub struct AckRequest {
    /// The message.
    pub token: AckToken,
    /// Window holding it.
    pub window: u64,
    /// Its fingerprint.
    pub fingerprint: u64,
}

/// An acknowledgement written to the broker connection.
#[derive(Debug, Clone, Copy)]
pub struct Settled {
    /// Window holding the message.
    pub window: u64,
    /// Its fingerprint.
    pub fingerprint: u64,
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct Connect {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Client id of the persistent session.
    pub client_id: String,
    /// Topic filters subscribed with QoS 1.
    pub topics: Vec<String>,
    /// Filters the output directory's session was subscribed to (from its state), so a
    /// resumed session is subscribed anew when they differ, and unsubscribed from the old.
    pub subscribed: Vec<String>,
    /// How long the first connection may take before the ingest gives up.
    pub connect_timeout: Duration,
    /// Created (empty) once the subscriptions are in place: from then on the broker keeps
    /// the stream's messages for this session, so a publisher may start.
    pub ready_file: Option<std::path::PathBuf>,
}

/// Creates the ready file (once); a failure is logged, never fatal.
fn mark_ready(connect: &Connect) {
    if let Some(path) = &connect.ready_file
        && !path.exists()
        && let Err(e) = std::fs::write(path, b"")
    {
        tracing::warn!(path = %path.display(), "cannot create the ready file: {e}");
    }
}

/// Channels between the network thread and the ingest.
#[derive(Debug)]
pub struct Links {
    /// Messages to the ingest (bounded: the back-pressure).
    pub messages: SyncSender<Incoming>,
    /// Acknowledgements to send.
    pub acks: Receiver<AckRequest>,
    /// Acknowledgements sent.
    pub settled: Sender<Settled>,
    /// Set by the ingest once its last acknowledgements are queued: send them, disconnect.
    pub finish: Arc<AtomicBool>,
}

/// Largest packet MQTT allows (remaining length 268 435 455 + header): the broker decides
/// what it forwards; a payload the schema finds too large is dead-lettered, not a
/// connection error that would make the broker redeliver it forever.
const MAX_PACKET: usize = 268_435_455 + 5;

/// Runs the connection until the ingest finishes (or, before a first connection,
/// `connect_timeout` passes). Errors: the broker is unreachable or refuses a subscription.
pub fn run(connect: &Connect, links: &Links) -> Result<(), IngestError> {
    let mut options = MqttOptions::new(&connect.client_id, &connect.host, connect.port);
    options
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(MAX_PACKET, MAX_PACKET);
    // The request channel carries acknowledgements (try_ack, never blocking this thread).
    let (client, mut connection) = Client::new(options, 16_384);
    let unreachable =
        |reason: String| IngestError::Broker { broker: format!("{}:{}", connect.host, connect.port), reason };
    let started = Instant::now();
    let mut epoch = 0u64;
    let mut connected = false;
    let mut consumer_gone = false;
    let mut disconnecting = false;
    let mut backoff = Duration::from_millis(100);
    let mut to_send: std::collections::VecDeque<AckRequest> = Default::default();
    let mut written: std::collections::VecDeque<AckRequest> = Default::default();
    loop {
        // Read before draining: the ingest queues its last acknowledgements, then sets it.
        let finishing = links.finish.load(Ordering::Acquire);
        // Acknowledgements asked for: only those of the current connection.
        loop {
            match links.acks.try_recv() {
                Ok(a) if a.token.epoch == epoch && connected => to_send.push_back(a),
                Ok(_) => {} // an earlier connection's: the broker redelivers the message
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        while let Some(a) = to_send.front() {
            let mut p = Publish::new("", QoS::AtLeastOnce, Vec::new());
            p.pkid = a.token.pkid;
            if client.try_ack(&p).is_err() {
                break; // the request channel is full: the next round
            }
            written.push_back(*a);
            to_send.pop_front();
        }
        if !disconnecting && finishing && to_send.is_empty() {
            // Everything the ingest queued was drained above and handed to rumqttc ahead of
            // the DISCONNECT (one FIFO channel).
            disconnecting = true;
            if !connected || client.try_disconnect().is_err() {
                return Ok(());
            }
        }
        match connection.recv_timeout(Duration::from_millis(20)) {
            Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) => {
                epoch += 1;
                connected = true;
                backoff = Duration::from_millis(100);
                to_send.clear();
                written.clear();
                // Subscribing again to a session that has the subscriptions would make the
                // broker resend retained messages: only for a new session, or when the
                // filters differ from those the output directory's session was given (a
                // first run, or a client id used before for another stream).
                let mut want = connect.topics.clone();
                want.sort();
                let mut had = connect.subscribed.clone();
                had.sort();
                let subscribe = !ack.session_present || (epoch == 1 && want != had);
                if ack.session_present {
                    tracing::info!(epoch, client_id = %connect.client_id, "connected; the broker resumes the persistent session");
                } else if epoch > 1 {
                    tracing::warn!(client_id = %connect.client_id, "the broker lost the persistent session (restarted without persistence?); messages sent while it was away are lost");
                }
                if subscribe {
                    tracing::info!(epoch, client_id = %connect.client_id, topics = ?connect.topics, "subscribing with QoS 1");
                    if ack.session_present {
                        for t in had.iter().filter(|t| !want.contains(t)) {
                            client.try_unsubscribe(t.clone()).map_err(|e| unreachable(e.to_string()))?;
                        }
                    }
                    for t in &connect.topics {
                        client.try_subscribe(t.clone(), QoS::AtLeastOnce).map_err(|e| unreachable(e.to_string()))?;
                    }
                } else {
                    mark_ready(connect);
                }
            }
            Ok(Ok(Event::Incoming(Packet::SubAck(ack)))) => {
                if ack.return_codes.iter().any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure)) {
                    return Err(unreachable(format!(
                        "the broker refused a subscription to {}",
                        connect.topics.join(", ")
                    )));
                }
                tracing::info!(topics = ?connect.topics, "subscribed");
                mark_ready(connect);
            }
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                if consumer_gone {
                    continue; // not acknowledged: redelivered to the next run
                }
                let m = Incoming {
                    topic: p.topic,
                    payload: p.payload,
                    token: AckToken { epoch, pkid: p.pkid },
                    dup: p.dup,
                };
                // Blocks while the queue is full: the back-pressure.
                if links.messages.send(m).is_err() {
                    consumer_gone = true;
                }
            }
            Ok(Ok(Event::Outgoing(Outgoing::PubAck(pkid)))) => {
                // Requests are handled in order, so this is the oldest one written.
                if let Some(a) = written.pop_front() {
                    debug_assert_eq!(a.token.pkid, pkid);
                    let _ = links.settled.send(Settled { window: a.window, fingerprint: a.fingerprint });
                }
            }
            Ok(Ok(Event::Outgoing(Outgoing::Disconnect))) => return Ok(()),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                connected = false;
                // rumqttc dropped the PUBACKs it had not written; the broker redelivers.
                to_send.clear();
                written.clear();
                if disconnecting {
                    return Ok(());
                }
                if epoch == 0 {
                    if started.elapsed() >= connect.connect_timeout {
                        return Err(unreachable(describe(&e)));
                    }
                    tracing::debug!(error = %describe(&e), "broker not reachable yet; retrying");
                } else {
                    tracing::warn!(error = %describe(&e), retry_in = ?backoff, "lost the broker connection; reconnecting (unacknowledged messages are redelivered)");
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        }
    }
}

fn describe(e: &ConnectionError) -> String {
    match e {
        ConnectionError::Io(io) => io.to_string(),
        other => other.to_string(),
    }
}
