//! An MQTT broker inside the simulator process (rumqttd, MQTT 3.1.1 only).
//!
//! # Design
//!
//! The broker is built in code (no TOML file): one router thread and one v4
//! listener thread, each with its own runtime, so it runs beside whatever
//! runtime the caller has and never blocks it.
//!
//! **There is no way to stop it.** rumqttd has no shutdown API
//! (bytebeamio/rumqtt#771); its threads live until the process exits. That is
//! why the demo and the tests run the broker as a child process
//! (`dockline-sim broker`) and stop it by killing that process, then start a new
//! one on the same port to simulate a broker restart.
//!
//! rumqttd cannot report the port it bound when asked for port 0, so
//! [`start`] binds `127.0.0.1:0` itself to pick a free port, releases it, starts
//! the listener on that port and retries with a fresh port if another process
//! took it in between (the workaround thin-edge uses in its test broker).
//!
//! Client ids containing `+ $ # /` make rumqttd drop the connection and, on the
//! client's reconnect, poison a listener mutex (bytebeamio/rumqtt#1062): every
//! client of this broker must use ids made of `[A-Za-z0-9_-]`, which the
//! protocol's `DeviceId` already enforces.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use rumqttd::protocol::v4::V4;
use rumqttd::{ConnectionSettings, RouterConfig, ServerSettings};

/// Largest MQTT payload the broker accepts (a full batch of events fits easily).
pub const MAX_PAYLOAD_BYTES: usize = 2 * 1024 * 1024;
/// How many clients may be connected at once.
pub const MAX_CONNECTIONS: usize = 10_000;
/// Unacknowledged QoS 1 messages the broker keeps in flight per connection.
/// Large, so that a backlog drain after an outage is throttled by acks, not dropped.
pub const MAX_INFLIGHT: usize = 4_096;

/// How many fresh ports [`start`] tries when asked for port 0.
const PORT_ATTEMPTS: usize = 10;
/// How long [`start`] waits for the listener to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The broker could not be started.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// No port could be picked with a bind to port 0.
    #[error("cannot pick a free port on {ip}: {source}")]
    PickPort {
        /// The address asked for.
        ip: std::net::IpAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The listener could not bind its address.
    #[error("broker cannot listen on {addr}: {message}; is another broker still running there?")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// rumqttd's error text.
        message: String,
    },
    /// The listener thread could not be spawned.
    #[error("cannot spawn the broker thread: {0}")]
    Thread(std::io::Error),
    /// The listener did not start accepting connections in time.
    #[error("broker on {addr} did not accept connections within {secs} s")]
    NotReady {
        /// The address.
        addr: SocketAddr,
        /// The wait.
        secs: u64,
    },
}

/// The rumqttd configuration for one v4 listener on `listen`: generous limits so
/// QoS 1 traffic is throttled, never dropped, by the broker.
pub fn config(listen: SocketAddr) -> rumqttd::Config {
    let router = RouterConfig {
        max_connections: MAX_CONNECTIONS,
        max_outgoing_packet_count: 1_024,
        // A segment must hold at least one largest payload; ten of them bound memory.
        max_segment_size: 64 * 1024 * 1024,
        max_segment_count: 10,
        ..RouterConfig::default()
    };
    let mut v4 = HashMap::new();
    v4.insert("dockline-v4".to_string(), server_settings(listen));
    rumqttd::Config {
        id: 0,
        router,
        v4: Some(v4),
        ..rumqttd::Config::default()
    }
}

fn server_settings(listen: SocketAddr) -> ServerSettings {
    ServerSettings {
        name: "dockline-v4".to_string(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: MAX_PAYLOAD_BYTES,
            max_inflight_count: MAX_INFLIGHT,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    }
}

/// Starts the broker on `listen` and returns the address it accepts on, once a
/// TCP connection to it succeeds. Port 0 picks a free port on that IP.
///
/// The broker runs on background threads until the process exits (see the
/// module doc: rumqttd cannot be stopped).
pub fn start(listen: SocketAddr) -> Result<SocketAddr, BrokerError> {
    let cfg = config(listen);
    // One router for every attempt: a failed listener leaves no connections behind.
    let router_tx = rumqttd::Router::new(cfg.id, cfg.router.clone()).spawn();
    let attempts = if listen.port() == 0 { PORT_ATTEMPTS } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let addr = if listen.port() == 0 {
            pick_port(listen)?
        } else {
            listen
        };
        let server = rumqttd::Server::new(server_settings(addr), router_tx.clone(), V4);
        match start_listener(addr, server) {
            Ok(()) => return Ok(addr),
            Err(e @ BrokerError::Bind { .. }) => {
                tracing::debug!(error = %e, "port taken between pick and bind; trying another");
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or(BrokerError::NotReady {
        addr: listen,
        secs: READY_TIMEOUT.as_secs(),
    }))
}

/// Binds port 0 on the requested IP, reads the port and releases it.
fn pick_port(listen: SocketAddr) -> Result<SocketAddr, BrokerError> {
    let probe = TcpListener::bind((listen.ip(), 0)).map_err(|source| BrokerError::PickPort {
        ip: listen.ip(),
        source,
    })?;
    probe.local_addr().map_err(|source| BrokerError::PickPort {
        ip: listen.ip(),
        source,
    })
}

/// Runs `server` on its own thread and waits until `addr` accepts connections.
fn start_listener(addr: SocketAddr, mut server: rumqttd::Server<V4>) -> Result<(), BrokerError> {
    // The listener only returns when its bind fails; it reports that here.
    let (failed_tx, failed_rx) = mpsc::channel::<String>();
    thread::Builder::new()
        .name(format!("broker-{}", addr.port()))
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = failed_tx.send(format!("cannot build its runtime: {e}"));
                    return;
                }
            };
            let result = rt.block_on(server.start(rumqttd::LinkType::Remote));
            let message = match result {
                Ok(()) => "listener stopped".to_string(),
                Err(e) => e.to_string(),
            };
            let _ = failed_tx.send(message);
        })
        .map_err(BrokerError::Thread)?;

    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(message) = failed_rx.try_recv() {
            return Err(BrokerError::Bind { addr, message });
        }
        if mqtt_handshake(addr).is_ok() {
            // An MQTT broker answered; make sure it is ours and not another
            // process that took the port while our bind failed.
            return match failed_rx.recv_timeout(Duration::from_millis(50)) {
                Ok(message) => Err(BrokerError::Bind { addr, message }),
                Err(_) => Ok(()),
            };
        }
        if Instant::now() >= deadline {
            return Err(BrokerError::NotReady {
                addr,
                secs: READY_TIMEOUT.as_secs(),
            });
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// CONNECT (MQTT 3.1.1, clean session, client id `dockline-probe`), expect an
/// accepting CONNACK, then DISCONNECT: proves an MQTT broker is listening, and
/// leaves no "connection closed by peer" error in its log the way a bare TCP
/// probe does.
fn mqtt_handshake(addr: SocketAddr) -> std::io::Result<()> {
    const CLIENT_ID: &[u8] = b"dockline-probe";
    let mut connect = vec![0x10, (10 + 2 + CLIENT_ID.len()) as u8];
    connect.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 10]);
    connect.extend_from_slice(&(CLIENT_ID.len() as u16).to_be_bytes());
    connect.extend_from_slice(CLIENT_ID);
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    stream.write_all(&connect)?;
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack)?;
    if connack[0] != 0x20 || connack[3] != 0 {
        return Err(std::io::Error::other(format!(
            "not an accepting MQTT CONNACK: {connack:02x?}"
        )));
    }
    stream.write_all(&[0xE0, 0])
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

    #[tokio::test]
    async fn port_zero_broker_carries_qos1_messages() {
        let addr = start(SocketAddr::from(([127, 0, 0, 1], 0))).expect("broker starts");
        assert_ne!(addr.port(), 0);
        let mut opts = MqttOptions::new("sim-test-1", addr.ip().to_string(), addr.port());
        opts.set_max_packet_size(MAX_PAYLOAD_BYTES + 1024, MAX_PAYLOAD_BYTES + 1024);
        let (client, mut events) = AsyncClient::new(opts, 16);
        client
            .subscribe("dockline/v1/#", QoS::AtLeastOnce)
            .await
            .expect("subscribe queued");
        let big = vec![7u8; 1024 * 1024];
        let got = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match events.poll().await.expect("connection") {
                    Event::Incoming(Packet::SubAck(_)) => {
                        client
                            .publish(
                                "dockline/v1/s/d/events",
                                QoS::AtLeastOnce,
                                false,
                                big.clone(),
                            )
                            .await
                            .expect("publish queued");
                    }
                    Event::Incoming(Packet::Publish(p)) => return p.payload.len(),
                    _ => {}
                }
            }
        })
        .await
        .expect("message within 10 s");
        assert_eq!(got, big.len());
    }

    #[test]
    fn a_taken_port_is_an_error_not_a_hang() {
        let first = start(SocketAddr::from(([127, 0, 0, 1], 0))).expect("broker starts");
        let err = start(first).expect_err("port is taken");
        assert!(matches!(err, BrokerError::Bind { .. }), "{err}");
    }
}
