//! `/admin`: the operator's dashboard, behind HTTP Basic auth (`ADMIN_USERNAME` /
//! `ADMIN_PASSWORD`). Disabled (404) when those are unset.

pub mod routes;
