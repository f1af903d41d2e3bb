//! Benchmark baseline (used by `scripts/bench.sh`, not part of the service): a bare actix-web
//! server whose handlers each run exactly one statement on PostgreSQL, the floor that any
//! uncached Tollgate request pays.
//!
//! - `GET /read?id=N`: one primary-key `SELECT` on `bench_counters` (the floor of an
//!   entitlement check);
//! - `POST /update?id=N` (also `GET`): one `UPDATE bench_counters SET used = used + 1
//!   WHERE id = $1 RETURNING used` (the floor of a usage consumption).
//!
//! It is set up as Tollgate is: actix-web's default worker count, each worker's blocking threads
//! bounded to its share of the pool (`tollgate::startup::db_threads`), an r2d2 pool with
//! Tollgate's default size (10) and its defaults (a check-out test per request), and the diesel
//! call run on actix's blocking pool with `web::block`, as `tollgate::db::Database::run` does.
//!
//! ```sh
//! DATABASE_URL=postgres://root@127.0.0.1:5432/tollgate_bench \
//!   cargo run --release --example bench_baseline -- 8091
//! ```
//!
//! The table is created by the caller (see `scripts/bench/baseline.sql`):
//! `CREATE TABLE bench_counters (id BIGINT PRIMARY KEY, used BIGINT NOT NULL, label TEXT NOT NULL)`.

use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};
use anyhow::Context;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, Pool};
use serde::{Deserialize, Serialize};

type PgPool = Pool<ConnectionManager<PgConnection>>;

diesel::table! {
    bench_counters (id) {
        id -> BigInt,
        used -> BigInt,
        label -> Text,
    }
}

#[derive(Debug, Queryable, Selectable, Serialize)]
#[diesel(table_name = bench_counters)]
struct Counter {
    id: i64,
    used: i64,
    label: String,
}

#[derive(Debug, Deserialize)]
struct IdQuery {
    id: i64,
}

#[derive(Debug, Serialize)]
struct Updated {
    id: i64,
    used: i64,
}

/// Runs `f` with a pooled connection on actix's blocking pool (as Tollgate's `Database::run`).
async fn run<T, F>(pool: &PgPool, f: F) -> anyhow::Result<T>
where
    F: FnOnce(&mut PgConnection) -> anyhow::Result<T> + Send + 'static,
    T: Send + 'static,
{
    let pool = pool.clone();
    web::block(move || {
        let mut conn = pool.get().context("database connection")?;
        f(&mut conn)
    })
    .await
    .map_err(|e| anyhow::anyhow!("blocking task failed: {e}"))?
}

fn failed(e: &anyhow::Error) -> HttpResponse {
    HttpResponse::InternalServerError().json(serde_json::json!({ "error": format!("{e:#}") }))
}

async fn read(pool: web::Data<PgPool>, query: web::Query<IdQuery>) -> HttpResponse {
    let id = query.id;
    let row = run(&pool, move |conn| {
        bench_counters::table
            .find(id)
            .select(Counter::as_select())
            .first(conn)
            .optional()
            .map_err(Into::into)
    })
    .await;
    match row {
        Ok(Some(counter)) => HttpResponse::Ok().json(counter),
        Ok(None) => HttpResponse::NotFound().json(serde_json::json!({ "error": "no such id" })),
        Err(e) => failed(&e),
    }
}

async fn update(pool: web::Data<PgPool>, query: web::Query<IdQuery>) -> HttpResponse {
    let id = query.id;
    let used = run(&pool, move |conn| {
        diesel::update(bench_counters::table.find(id))
            .set(bench_counters::used.eq(bench_counters::used + 1))
            .returning(bench_counters::used)
            .get_result::<i64>(conn)
            .optional()
            .map_err(Into::into)
    })
    .await;
    match used {
        Ok(Some(used)) => HttpResponse::Ok().json(Updated { id, used }),
        Ok(None) => HttpResponse::NotFound().json(serde_json::json!({ "error": "no such id" })),
        Err(e) => failed(&e),
    }
}

async fn ready() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ready" }))
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("DATABASE_URL").context("set DATABASE_URL to a PostgreSQL URL")?;
    let port: u16 = match std::env::args()
        .nth(1)
        .or_else(|| std::env::var("PORT").ok())
    {
        Some(p) => p.parse().context("the port must be a number")?,
        None => 8091,
    };
    let pool_size: u32 = std::env::var("BENCH_POOL_SIZE")
        .ok()
        .map(|s| s.parse())
        .transpose()
        .context("BENCH_POOL_SIZE must be a number")?
        .unwrap_or(10);
    let pool = Pool::builder()
        .max_size(pool_size)
        .connection_timeout(Duration::from_secs(5))
        .build(ConnectionManager::<PgConnection>::new(url))
        .context("could not connect to the database (check DATABASE_URL)")?;
    let pool = web::Data::new(pool);
    // As Tollgate: one worker per core, each with blocking threads for its share of the pool.
    let (workers, blocking) = tollgate::startup::db_threads(pool_size);
    println!("bench_baseline listening on 127.0.0.1:{port} (pool {pool_size}, {workers} workers x {blocking} blocking threads)");
    HttpServer::new(move || {
        App::new()
            .app_data(pool.clone())
            .route("/read", web::get().to(read))
            .route("/update", web::post().to(update))
            .route("/update", web::get().to(update))
            .route("/readyz", web::get().to(ready))
    })
    .workers(workers)
    .worker_max_blocking_threads(blocking)
    .bind(("0.0.0.0", port))?
    .run()
    .await?;
    Ok(())
}
