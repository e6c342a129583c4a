//! A lazily connected publisher for dead-letter copies made outside a delivery (a parked
//! message that waited too long) and for operator requeues.

use tokio::sync::Mutex;

use super::publisher::{PublishError, Publisher};
use super::topology::Topology;

pub struct DeadLetterSink {
    url: String,
    topology: Topology,
    state: Mutex<Option<(lapin::Connection, Publisher)>>,
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("connecting to RabbitMQ to publish a dead-letter copy failed: {0}")]
    Connect(lapin::Error),
    #[error(transparent)]
    Publish(#[from] PublishError),
}

impl DeadLetterSink {
    pub fn new(url: String, topology: Topology) -> Self {
        DeadLetterSink {
            url,
            topology,
            state: Mutex::new(None),
        }
    }

    async fn publisher(&self) -> Result<Publisher, SinkError> {
        let mut state = self.state.lock().await;
        if let Some((conn, p)) = state.as_ref()
            && conn.status().connected()
        {
            return Ok(p.clone());
        }
        let conn = lapin::Connection::connect(&self.url, lapin::ConnectionProperties::default())
            .await
            .map_err(SinkError::Connect)?;
        let p = Publisher::open(&conn).await.map_err(SinkError::Connect)?;
        *state = Some((conn, p.clone()));
        Ok(p)
    }

    /// Publishes a masked copy to the dead-letter queue with the reason headers.
    pub async fn dead_letter(
        &self,
        body: &[u8],
        routing_key: &str,
        reason: &str,
        detail: &str,
        message_id: Option<&str>,
        traceparent: Option<&str>,
    ) -> Result<(), SinkError> {
        let p = self.publisher().await?;
        let result = p
            .dead_letter(
                &self.topology,
                body,
                routing_key,
                reason,
                detail,
                message_id,
                traceparent,
            )
            .await;
        if result.is_err() {
            // Reconnect next time.
            *self.state.lock().await = None;
        }
        Ok(result?)
    }
}
