//! A TCP proxy a test can pull the plug on: while it is down, every connection through it
//! is cut and new ones are refused (its port is closed), as when the server behind it
//! stops; when it is up again, the same port forwards again.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

pub struct FaultProxy {
    pub port: u16,
    up: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    pub async fn start(target: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (up, mut state) = watch::channel(true);
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
                            connections.spawn(async move {
                                if let Ok(mut server) = TcpStream::connect(target).await {
                                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
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
        FaultProxy { port, up, task }
    }

    pub fn down(&self) {
        let _ = self.up.send(false);
    }

    pub fn up(&self) {
        let _ = self.up.send(true);
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
