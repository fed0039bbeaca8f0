//! The MQTT broker the tests run against, shared by two test packages (`twin-kernel`'s
//! ingest tests and the end-to-end online twin), which include this file with `#[path]`:
//! `TWINFLOW_MQTT_BROKER=HOST:PORT`, else the private mosquitto of `hpc/mqtt-local.sh`
//! (started by `make test`), whose port is in `target/mqtt/port`. Without a broker the
//! tests fail with a hint; they never skip.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

/// `HOST:PORT` of the broker under test, checked to accept a connection; `tests` names who
/// asks, for the message when there is none.
pub fn broker(tests: &str) -> String {
    let port_file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/mqtt/port");
    let addr = match std::env::var("TWINFLOW_MQTT_BROKER") {
        Ok(a) if !a.is_empty() => a,
        _ => match std::fs::read_to_string(&port_file) {
            Ok(p) => format!("127.0.0.1:{}", p.trim()),
            Err(_) => panic!(
                "no MQTT broker for the {tests} tests: `{}` is missing and TWINFLOW_MQTT_BROKER is unset\n\
                 hint: start one with `bash hpc/mqtt-local.sh start` (`make test` does)",
                port_file.display()
            ),
        },
    };
    let reachable = addr
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok());
    assert!(
        reachable,
        "the MQTT broker `{addr}` does not answer\nhint: `bash hpc/mqtt-local.sh start` (`make test` does)"
    );
    addr
}
