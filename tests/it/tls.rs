//! TLS to PostgreSQL: the worker's store connects with `sslmode=require` and, trusting the
//! server's certificate, `sslmode=verify-ca`.
//!
//! Needs the local server to offer TLS (`ssl = on`, as Debian's packages configure it with the
//! `ssl-cert` snakeoil certificate). The certificate trusted for `verify-ca` is `PGSSLROOTCERT`
//! when set, else the server's own `ssl_cert_file` (a self-signed certificate is its own CA).

use std::path::PathBuf;

use capture_worker::config::{DatabaseSettings, Secret};
use capture_worker::storage::Store;

use crate::harness::PG_ADMIN;

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

/// The certificate to trust for `verify-ca`; fails with what to change when the server offers
/// no TLS.
async fn server_ca() -> PathBuf {
    let pool = sqlx::PgPool::connect(PG_ADMIN).await.unwrap();
    let (ssl, cert, data): (String, String, String) = sqlx::query_as(
        "select current_setting('ssl'), current_setting('ssl_cert_file'), \
         current_setting('data_directory')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    assert_eq!(
        ssl, "on",
        "the PostgreSQL server at {PG_ADMIN} does not offer TLS: set `ssl = on` with a \
         certificate (Debian: the ssl-cert package's snakeoil pair, its default) and reload it"
    );
    if let Ok(ca) = std::env::var("PGSSLROOTCERT") {
        return PathBuf::from(ca);
    }
    let cert = PathBuf::from(data).join(cert);
    assert!(
        std::fs::File::open(&cert).is_ok(),
        "cannot read the server's certificate {}: make it readable or set PGSSLROOTCERT to the \
         CA that signed it",
        cert.display()
    );
    cert
}

#[tokio::test]
async fn the_store_speaks_tls_to_postgresql_when_the_url_asks_for_it() {
    let ca = server_ca().await;
    assert!(ssl_in_use("postgres://postgres@127.0.0.1:5432/postgres?sslmode=require").await);
    assert!(
        ssl_in_use(&format!(
            "postgres://postgres@127.0.0.1:5432/postgres?sslmode=verify-ca&sslrootcert={}",
            ca.display()
        ))
        .await
    );
    assert!(!ssl_in_use("postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable").await);
}
