//! TLS to PostgreSQL: the worker's store connects with `sslmode=require` and, with the
//! server's CA, `sslmode=verify-ca` (the local server uses Debian's snakeoil certificate).

use capture_worker::config::{DatabaseSettings, Secret};
use capture_worker::storage::Store;

async fn ssl_in_use(url: &str) -> bool {
    let settings = DatabaseSettings {
        url: Secret::new(url),
        max_connections: 1,
        acquire_timeout_ms: 5000,
    };
    let store = Store::connect(&settings, false).await.unwrap();
    let on: bool = sqlx::query_scalar("select ssl from pg_stat_ssl where pid = pg_backend_pid()")
        .fetch_one(store.pool())
        .await
        .unwrap();
    store.pool().close().await;
    on
}

#[tokio::test]
async fn the_store_speaks_tls_to_postgresql_when_the_url_asks_for_it() {
    assert!(ssl_in_use("postgres://postgres@127.0.0.1:5432/postgres?sslmode=require").await);
    assert!(
        ssl_in_use(
            "postgres://postgres@127.0.0.1:5432/postgres?sslmode=verify-ca&sslrootcert=/etc/ssl/certs/ssl-cert-snakeoil.pem"
        )
        .await
    );
    assert!(!ssl_in_use("postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable").await);
}
