//! Every Redis round trip timed and its failures counted (`mandate_store_command_duration_seconds`,
//! `mandate_store_errors_total`, through the `metrics` facade): one wrapper around the connection
//! every backend shares, so no store can forget it.

use std::time::Instant;

use redis::aio::ConnectionLike;
use redis::{Cmd, Pipeline, RedisFuture, Value};

/// `C`, with each command and pipeline it sends measured.
#[derive(Clone, Debug)]
pub struct Instrumented<C>(pub C);

impl<C: ConnectionLike + Send> ConnectionLike for Instrumented<C> {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let started = Instant::now();
            let answer = self.0.req_packed_command(cmd).await;
            observe(command_name(cmd), started, answer.is_err());
            answer
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let started = Instant::now();
            let answer = self.0.req_packed_commands(pipeline, offset, count).await;
            observe("pipeline".to_owned(), started, answer.is_err());
            answer
        })
    }

    fn get_db(&self) -> i64 {
        self.0.get_db()
    }
}

/// The command's name (`GET`, `EVALSHA`, `XREAD`…): mandate's own, so a bounded set.
fn command_name(cmd: &Cmd) -> String {
    match cmd.args_iter().next() {
        Some(redis::Arg::Simple(name)) => String::from_utf8_lossy(name).to_ascii_uppercase(),
        _ => "other".to_owned(),
    }
}

fn observe(sent: String, started: Instant, failed: bool) {
    let elapsed = started.elapsed().as_secs_f64();
    if failed {
        metrics::counter!("mandate_store_errors_total", "sent" => sent.clone()).increment(1);
    }
    metrics::histogram!("mandate_store_command_duration_seconds", "sent" => sent).record(elapsed);
}
