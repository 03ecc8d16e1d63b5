//! `Query` and `Path` extractors whose rejections use the API's JSON error shape, the
//! client's address and the bearer credential.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{
    ConnectInfo, FromRequestParts, rejection::PathRejection, rejection::QueryRejection,
};
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::config::IpBlock;
use crate::error::ApiError;
use crate::state::AppState;

pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if parts
            .uri
            .query()
            .is_some_and(|q| percent_encoding::percent_decode_str(q).any(|b| b == 0))
        {
            return Err(ApiError::validation(
                "Query must not contain NUL characters",
            ));
        }
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => {
                Err(ApiError::validation(format!(
                    "Invalid query string: {}",
                    e.body_text()
                        .rsplit_once(": ")
                        .map(|(_, m)| m)
                        .unwrap_or_default()
                )))
            }
            Err(e) => Err(ApiError::validation(e.body_text())),
        }
    }
}

pub struct Path<T>(pub T);

impl<S, T> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // PostgreSQL rejects NUL in text; no identifier contains control characters.
        if percent_encoding::percent_decode_str(parts.uri.path()).any(|b| b < 0x20 || b == 0x7f) {
            return Err(ApiError::validation(
                "Path must not contain control characters",
            ));
        }
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => Err(ApiError::validation(
                format!("Invalid path parameter: {}", e.body_text()),
            )),
            Err(e) => Err(ApiError::validation(e.body_text())),
        }
    }
}

/// The bearer credential, if the request carries one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The client's address: the TCP peer or, when the server is configured to trust its
/// reverse proxy, the right-most `X-Forwarded-For` hop that is not itself a trusted proxy.
/// Hops to the left of that one were written by the client and prove nothing.
pub struct ClientIp(pub IpAddr);

pub fn client_ip(
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
    trust_proxy: bool,
    trusted_proxies: &[IpBlock],
) -> IpAddr {
    let peer = peer
        .map(|p| p.ip().to_canonical())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    if !trust_proxy {
        return peer;
    }
    let mut client = peer;
    // Several headers count as one list, in order.
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.trim().parse::<IpAddr>() else {
            // Garbage from here leftwards: keep the last hop a proxy vouched for.
            break;
        };
        client = ip.to_canonical();
        if !trusted_proxies.iter().any(|block| block.contains(client)) {
            break;
        }
    }
    client
}

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        Ok(ClientIp(client_ip(
            &parts.headers,
            peer,
            state.config.trust_proxy_headers,
            &state.config.trusted_proxies,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append("x-forwarded-for", v.parse().unwrap());
        }
        headers
    }

    proptest::proptest! {
        /// Any bytes in `Authorization` and `X-Forwarded-For`: no panic; a bearer token is
        /// only what follows the scheme; the client is always the peer or a parsed hop.
        #[test]
        fn arbitrary_auth_and_forwarding_headers_never_panic(
            auth in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..120),
            hops in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80), 0..4),
        ) {
            let mut headers = HeaderMap::new();
            if let Ok(v) = axum::http::HeaderValue::from_bytes(&auth) {
                headers.insert(AUTHORIZATION, v);
            }
            if let Some(token) = bearer(&headers) {
                proptest::prop_assert!(!token.is_empty());
                proptest::prop_assert!(auth.len() > "bearer ".len());
            }
            for h in &hops {
                if let Ok(v) = axum::http::HeaderValue::from_bytes(h) {
                    headers.append("x-forwarded-for", v);
                }
            }
            let peer = Some("127.0.0.1:1".parse().unwrap());
            let trusted = [IpBlock::parse("127.0.0.0/8").unwrap()];
            let ip = client_ip(&headers, peer, true, &trusted);
            let text = String::from_utf8_lossy(&hops.concat()).to_string();
            proptest::prop_assert!(ip.to_string() == "127.0.0.1" || text.contains(&ip.to_string()) || ip.is_ipv4());
        }
    }

    #[test]
    fn the_client_is_the_right_most_untrusted_hop() {
        let peer = Some("127.0.0.1:40000".parse().unwrap());
        let trusted = [
            IpBlock::parse("127.0.0.0/8").unwrap(),
            IpBlock::parse("10.0.0.0/8").unwrap(),
        ];
        let ip = |values: &[&str], trust: bool| {
            client_ip(&forwarded(values), peer, trust, &trusted).to_string()
        };
        // Without trust the header is ignored.
        assert_eq!(ip(&["203.0.113.9"], false), "127.0.0.1");
        // A forged left-most hop does not win over what the proxy appended.
        assert_eq!(ip(&["6.6.6.6, 203.0.113.9"], true), "203.0.113.9");
        // Trusted proxies in the chain are skipped, across several headers.
        assert_eq!(
            ip(&["6.6.6.6, 198.51.100.4", "10.1.2.3"], true),
            "198.51.100.4"
        );
        // Garbage stops the walk at the last hop a proxy vouched for.
        assert_eq!(ip(&["nonsense, 10.1.2.3"], true), "10.1.2.3");
        assert_eq!(ip(&["203.0.113.9, nonsense"], true), "127.0.0.1");
        // No header: the peer. IPv4-mapped IPv6 reads as IPv4.
        assert_eq!(ip(&[], true), "127.0.0.1");
        assert_eq!(ip(&["::ffff:203.0.113.9"], true), "203.0.113.9");
        assert_eq!(ip(&["2001:db8::1"], true), "2001:db8::1");
    }
}
