//! The store's PostgreSQL connections are opened with TCP_NODELAY (vendor/README.md).
//! Without it a statement larger than one segment waits ~40 ms for the server's delayed
//! ACK, and every large intake batch pays that wait.

use std::mem::ManuallyDrop;
use std::net::TcpStream;
use std::os::fd::{FromRawFd, RawFd};

use capture_worker::config::{DatabaseSettings, Secret};
use capture_worker::storage::Store;

/// The TCP_NODELAY setting of this process's socket whose local port is `port`, if any.
fn nodelay_of_local_port(port: u16) -> Option<bool> {
    for entry in std::fs::read_dir("/proc/self/fd").unwrap() {
        let entry = entry.unwrap();
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if !target.to_string_lossy().starts_with("socket:") {
            continue;
        }
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<RawFd>() else {
            continue;
        };
        // SAFETY: `fd` is an open socket of this process (listed above). ManuallyDrop keeps
        // the borrowed stream from closing it; only getsockname/getsockopt are called.
        #[allow(unsafe_code)]
        let stream = ManuallyDrop::new(unsafe { TcpStream::from_raw_fd(fd) });
        if stream.local_addr().is_ok_and(|a| a.port() == port) {
            return Some(stream.nodelay().unwrap());
        }
    }
    None
}

#[tokio::test]
async fn the_stores_postgresql_connections_disable_nagle() {
    let settings = DatabaseSettings {
        url: Secret::new("postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"),
        max_connections: 1,
        acquire_timeout_ms: 5000,
    };
    let store = Store::connect(&settings, false).await.unwrap();
    let client_port: i32 = sqlx::query_scalar("select inet_client_port()")
        .fetch_one(store.pool())
        .await
        .unwrap();
    let port = u16::try_from(client_port).unwrap();
    assert_eq!(
        nodelay_of_local_port(port),
        Some(true),
        "the pool's connection from local port {port} must have TCP_NODELAY set"
    );
    store.pool().close().await;
}
