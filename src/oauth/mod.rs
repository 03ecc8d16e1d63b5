//! Google (or any OpenID Connect provider) sign-in with the client secret held by this
//! server: StreamVault's desktop flow and Better Auth's social sign-in for web clients.

pub mod routes;
pub mod service;
