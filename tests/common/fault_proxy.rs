//! A TCP proxy a test can pull the plug on: while it is down, every connection through it
//! is cut and new ones are refused (its port is closed), as when the server behind it
//! stops; when it is up again, the same port forwards again. It can also swallow
//! traffic while keeping every connection open, as a network that vanishes does.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

pub struct FaultProxy {
    pub port: u16,
    up: watch::Sender<bool>,
    flowing: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    pub async fn start(target: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (up, mut state) = watch::channel(true);
        let (flowing, flow) = watch::channel(true);
        let task = tokio::spawn(async move {
            let mut listener = Some(listener);
            loop {
                if !*state.borrow_and_update() {
                    listener = None;
                    if state.changed().await.is_err() {
                        return;
                    }
                    continue;
                }
                let current = match listener.take() {
                    Some(l) => l,
                    None => bind_again(port).await,
                };
                let mut connections = JoinSet::new();
                loop {
                    tokio::select! {
                        accepted = current.accept() => {
                            let Ok((mut client, _)) = accepted else { continue };
                            let mut flow = flow.clone();
                            connections.spawn(async move {
                                let Ok(mut server) = TcpStream::connect(target).await else {
                                    return;
                                };
                                tokio::select! {
                                    _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                                    () = stopped(&mut flow) => {
                                        // Swallowed: nothing moves, nothing closes.
                                        std::future::pending::<()>().await;
                                    }
                                }
                            });
                        }
                        changed = state.changed() => {
                            if changed.is_err() {
                                return;
                            }
                            if !*state.borrow() {
                                // Down: cut every connection and close the port.
                                connections.abort_all();
                                break;
                            }
                        }
                    }
                }
            }
        });
        FaultProxy {
            port,
            up,
            flowing,
            task,
        }
    }

    pub fn down(&self) {
        let _ = self.up.send(false);
    }

    pub fn up(&self) {
        let _ = self.up.send(true);
    }

    /// The network vanishes: open connections stay open but carry nothing more.
    pub fn vanish(&self) {
        let _ = self.flowing.send(false);
    }
}

/// Resolves once traffic is to be swallowed.
async fn stopped(flow: &mut watch::Receiver<bool>) {
    while *flow.borrow_and_update() {
        if flow.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

async fn bind_again(port: u16) -> TcpListener {
    loop {
        match TcpListener::bind(("127.0.0.1", port)).await {
            Ok(l) => return l,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
