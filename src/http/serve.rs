//! The HTTP server loop (what `axum::serve` does: HTTP/1.1, and HTTP/2 without TLS for a
//! proxy that speaks it; plus the request-size limits it does not expose). hyper answers a request over its own limits itself, with an empty body;
//! here its limits sit well above the server's own, so oversized requests reach
//! [`request_limits`] and get a JSON 414 or 431 like any other bad input.

use std::convert::Infallible;
use std::pin::pin;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tower::{Service, ServiceExt};

use crate::error::ApiError;

/// The longest request target (path and query) the server reads.
/// (32 KiB: a desktop sign-in's 2,048-character state, percent-encoded, fits.)
pub const MAX_URI_BYTES: usize = 32 * 1024;
/// Header fields one request may carry.
pub const MAX_HEADERS: usize = 100;
/// The bytes of one request's header fields, names and values.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// hyper's own bound on header fields, past ours: within it a request is parsed and
/// refused here with a JSON body; only beyond it does hyper refuse it with an empty one.
/// (Its buffer, ~408 KiB by default, is already past [`MAX_HEADER_BYTES`].)
const HYPER_MAX_HEADERS: usize = 128;

/// Serves `app` on `listener` until `stop`, then stops accepting, lets each connection
/// finish its request in flight, and returns once they are all closed.
pub async fn serve<S>(listener: TcpListener, app: S, stop: CancellationToken)
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let (closed_tx, closed_rx) = watch::channel(());
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // A connection that went away before it was accepted.
                Err(e) if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionRefused
                        | std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::ConnectionReset
                ) => continue,
                Err(e) => {
                    // Out of file descriptors and the like: back off rather than spin (as
                    // hyper's and axum's servers do).
                    tracing::error!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        // Real-time answers (Socket.IO, Watch Together, WHIP) are small writes that must
        // not wait for the peer's delayed ACK behind Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        let service = app.clone().map_request(move |request: Request<Incoming>| {
            let mut request = request.map(Body::new);
            request.extensions_mut().insert(ConnectInfo(remote));
            request
        });
        let service = TowerToHyperService::new(service);
        let stop = stop.clone();
        let closed_rx = closed_rx.clone();
        tokio::spawn(async move {
            let mut builder = Builder::new(TokioExecutor::new());
            builder.http1().max_headers(HYPER_MAX_HEADERS);
            let mut connection =
                pin!(builder.serve_connection_with_upgrades(TokioIo::new(stream), service));
            let mut stopping = pin!(stop.cancelled());
            let mut told = false;
            loop {
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(e) = result {
                            tracing::trace!(error = %e, %remote, "connection ended with an error");
                        }
                        break;
                    }
                    () = &mut stopping, if !told => {
                        told = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
            drop(closed_rx);
        });
    }
    drop(closed_rx);
    drop(listener);
    closed_tx.closed().await;
}

/// Refuses a request whose target or headers are over the server's limits, before
/// anything reads them.
pub async fn request_limits(request: Request, next: Next) -> Response {
    let uri = request
        .uri()
        .path_and_query()
        .map_or(0, |pq| pq.as_str().len());
    if uri > MAX_URI_BYTES {
        return refuse(
            StatusCode::URI_TOO_LONG,
            format!("The request target is over {MAX_URI_BYTES} bytes"),
        );
    }
    let headers = request.headers();
    if headers.len() > MAX_HEADERS {
        return refuse(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("The request has more than {MAX_HEADERS} header fields"),
        );
    }
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if bytes > MAX_HEADER_BYTES {
        return refuse(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("The request's header fields are over {MAX_HEADER_BYTES} bytes"),
        );
    }
    next.run(request).await
}

fn refuse(status: StatusCode, message: String) -> Response {
    let code = if status == StatusCode::URI_TOO_LONG {
        crate::error::codes::URI_TOO_LONG
    } else {
        crate::error::codes::HEADERS_TOO_LARGE
    };
    ApiError::new(status, code, message).into_response()
}
