//! A minimal Socket.IO v5 client over the WebSocket transport (Engine.IO v4), enough to
//! drive the server from Rust tests and the load generator: connect with auth, receive
//! events, emit with acknowledgements, answer pings.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

type Acks = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

pub struct SioClient {
    outgoing: mpsc::UnboundedSender<String>,
    events: mpsc::UnboundedReceiver<(String, Value)>,
    buffered: VecDeque<(String, Value)>,
    acks: Acks,
    next_ack: AtomicU64,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for SioClient {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Connects to `base` (http://host:port) with `auth` as the handshake payload.
/// `Err` carries the server's `connect_error` message.
pub async fn connect(base: &str, auth: Value) -> Result<SioClient, String> {
    let url = format!(
        "{}/socket.io/?EIO=4&transport=websocket",
        base.replacen("http://", "ws://", 1)
    );
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .map_err(|e| format!("websocket: {e}"))?;
    let (mut sink, mut stream) = ws.split();
    // Engine.IO open packet.
    let open = next_text(&mut stream).await?;
    if !open.starts_with('0') {
        return Err(format!("unexpected open packet: {open}"));
    }
    sink.send(Message::text(format!("40{auth}")))
        .await
        .map_err(|e| e.to_string())?;
    loop {
        let packet = next_text(&mut stream).await?;
        if packet == "2" {
            sink.send(Message::text("3"))
                .await
                .map_err(|e| e.to_string())?;
            continue;
        }
        if let Some(rest) = packet.strip_prefix("44") {
            let v: Value = serde_json::from_str(rest).unwrap_or(Value::Null);
            return Err(v["message"].as_str().unwrap_or(rest).to_string());
        }
        if packet.starts_with("40") {
            break;
        }
    }
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<String>();
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let acks: Acks = Arc::new(Mutex::new(HashMap::new()));
    let reader_acks = acks.clone();
    let pong = out_tx.clone();
    let reader = tokio::spawn(async move {
        let writer = tokio::spawn(async move {
            while let Some(text) = out_rx.recv().await {
                if sink.send(Message::text(text)).await.is_err() {
                    break;
                }
            }
        });
        while let Ok(packet) = next_text(&mut stream).await {
            if packet == "2" {
                let _ = pong.send("3".into());
            } else if let Some(rest) = packet.strip_prefix("42") {
                if let Ok(Value::Array(mut items)) = serde_json::from_str::<Value>(rest)
                    && let Some(Value::String(name)) = items.first().cloned()
                {
                    let data = if items.len() > 1 {
                        items.remove(1)
                    } else {
                        Value::Null
                    };
                    let _ = ev_tx.send((name, data));
                }
            } else if let Some(rest) = packet.strip_prefix("43") {
                let split = rest.find('[').unwrap_or(rest.len());
                if let Ok(id) = rest[..split].parse::<u64>()
                    && let Ok(Value::Array(mut items)) =
                        serde_json::from_str::<Value>(&rest[split..])
                    && let Some(tx) = reader_acks.lock().await.remove(&id)
                {
                    let _ = tx.send(if items.is_empty() {
                        Value::Null
                    } else {
                        items.remove(0)
                    });
                }
            } else if packet.starts_with('1') || packet.starts_with("41") {
                break;
            }
        }
        writer.abort();
    });
    Ok(SioClient {
        outgoing: out_tx,
        events: ev_rx,
        buffered: VecDeque::new(),
        acks,
        next_ack: AtomicU64::new(1),
        reader,
    })
}

async fn next_text<S>(stream: &mut S) -> Result<String, String>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match tokio::time::timeout(Duration::from_secs(30), stream.next()).await {
            Err(_) => return Err("timed out waiting for the server".into()),
            Ok(None) => return Err("connection closed".into()),
            Ok(Some(Err(e))) => return Err(e.to_string()),
            Ok(Some(Ok(Message::Text(t)))) => return Ok(t.to_string()),
            Ok(Some(Ok(Message::Close(_)))) => return Err("connection closed".into()),
            Ok(Some(Ok(_))) => continue,
        }
    }
}

impl SioClient {
    pub fn emit(&self, event: &str, data: Value) {
        let _ = self
            .outgoing
            .send(format!("42{}", Value::Array(vec![event.into(), data])));
    }

    pub async fn emit_with_ack(&self, event: &str, data: Value) -> Value {
        let id = self.next_ack.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.acks.lock().await.insert(id, tx);
        let _ = self
            .outgoing
            .send(format!("42{id}{}", Value::Array(vec![event.into(), data])));
        tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .expect("ack within 5 s")
            .expect("ack delivered")
    }

    /// The next `event` whose payload satisfies `pred`, within `timeout`. Other events are kept.
    pub async fn wait_for(
        &mut self,
        event: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        if let Some(pos) = self
            .buffered
            .iter()
            .position(|(n, v)| n == event && pred(v))
        {
            return self.buffered.remove(pos).unwrap().1;
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some((name, data))) => {
                    if name == event && pred(&data) {
                        return data;
                    }
                    self.buffered.push_back((name, data));
                }
                Ok(None) => panic!("socket closed while waiting for {event}"),
                Err(_) => panic!("no {event} within {timeout:?}; got: {:?}", self.buffered),
            }
        }
    }

    /// Asserts no `event` arrives within `window`.
    pub async fn expect_none(&mut self, event: &str, window: Duration) {
        let deadline = tokio::time::Instant::now() + window;
        while let Ok(Some((name, data))) =
            tokio::time::timeout_at(deadline, self.events.recv()).await
        {
            assert_ne!(name, event, "unexpected {event}: {data}");
            self.buffered.push_back((name, data));
        }
        assert!(
            !self.buffered.iter().any(|(n, _)| n == event),
            "unexpected {event} already buffered"
        );
    }

    /// Raw receiver for the load generator (no buffering).
    pub async fn recv(&mut self) -> Option<(String, Value)> {
        if let Some(e) = self.buffered.pop_front() {
            return Some(e);
        }
        self.events.recv().await
    }
}
