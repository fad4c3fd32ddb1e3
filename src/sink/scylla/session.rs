//! Connecting the scylla driver, which runs on tokio, from tidegate's configuration.

use std::time::Duration;

use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use thiserror::Error;

use super::settings::ScyllaSettings;

#[derive(Debug, Error)]
pub enum ConnectError {
    #[error("cannot connect to ScyllaDB at {contact_points}: {source}")]
    Connect {
        contact_points: String,
        #[source]
        // Boxed: the driver's error is large, and errors travel by value.
        source: Box<scylla::errors::NewSessionError>,
    },
}

/// Opens a driver session to the configured cluster. Call from a tokio runtime.
pub async fn connect(config: &ScyllaSettings) -> Result<Session, ConnectError> {
    let mut builder = SessionBuilder::new()
        .known_nodes(&config.contact_points)
        .connection_timeout(Duration::from_millis(config.request_timeout_ms))
        .cluster_metadata_refresh_interval(Duration::from_millis(config.metadata_refresh_ms));
    if !config.username.is_empty() {
        builder = builder.user(&config.username, &config.password);
    }
    builder
        .build()
        .await
        .map_err(|source| ConnectError::Connect {
            contact_points: config.contact_points.join(","),
            source: Box::new(source),
        })
}
