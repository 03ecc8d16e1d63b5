//! StreamVault's TMDB proxy (`/api/tmdb/*`): the server holds the TMDB credentials.

pub mod routes;
pub mod service;
