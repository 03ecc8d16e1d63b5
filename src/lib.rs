//! Watchpost: a self-hosted home-camera server. The control plane (accounts, devices,
//! commands, events, streams, recordings) and the media plane (an SFU, in the
//! `watchpost-media` crate) run in this one process.

pub mod admin;
pub mod allocator;
pub mod app;
pub mod auth;
pub mod cli;
pub mod commands;
pub mod config;
pub mod crypto;
pub mod db;
pub mod devices;
pub mod error;
pub mod events;
pub mod health;
pub mod http;
pub mod jobs;
pub mod keyed_lock;
pub mod links;
pub mod media_api;
pub mod oauth;
pub mod openapi;
pub mod pages;
pub mod pagination;
pub mod realtime;
pub mod recording_runtime;
pub mod recordings;
pub mod state;
pub mod storage;
pub mod streams;
pub mod time;
pub mod tmdb;
pub mod upstream;
pub mod videos;
pub mod watchtogether;

pub use app::Server;
pub use config::Config;
pub use state::AppState;
