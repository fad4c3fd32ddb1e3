//! What the ingest port does for web pages, which reach it from their own origin.
//!
//! A page that is being closed can still send one request with `navigator.sendBeacon`,
//! but only as a CORS "simple request": no custom headers, and a body of type
//! `text/plain` (or a form type). PostHog's capture and Sentry accept such bodies; here
//! `browsers.accept_text_plain` lets `/v1/events` read a `text/plain` body as JSON. A
//! beacon does not read its answer, so it needs no CORS headers in the response.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct BrowserSettings {
    /// Read a `text/plain` body on `/v1/events` as JSON (for `navigator.sendBeacon`).
    pub accept_text_plain: bool,
}
