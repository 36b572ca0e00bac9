//! Queue topology (ARCHITECTURE §3): a durable quorum input queue with a delivery limit,
//! dead-lettering through `{queue}.dlx` (fanout) into `{queue}.dlq` (for operators) and
//! `{queue}.dlq.reconcile` (for the gateway's reconciler). Every process declares
//! it with identical arguments, so whichever starts first creates it.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};

#[derive(Debug, Clone)]
pub struct Topology {
    pub queue: String,
    pub max_deliveries: u32,
}

impl Topology {
    pub fn new(queue: impl Into<String>, max_deliveries: u32) -> Self {
        Self { queue: queue.into(), max_deliveries }
    }

    pub fn dlx(&self) -> String {
        format!("{}.dlx", self.queue)
    }

    pub fn dlq(&self) -> String {
        format!("{}.dlq", self.queue)
    }

    /// A second queue on the dead-letter exchange: the gateway's reconciler consumes its
    /// copy of every dead-lettered message, so the DLQ itself is left for operators.
    pub fn dlq_feed(&self) -> String {
        format!("{}.dlq.reconcile", self.queue)
    }

    fn queue_arguments(&self) -> FieldTable {
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), AMQPValue::LongString(LongString::from("quorum")));
        args.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(i64::from(self.max_deliveries)));
        args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(LongString::from(self.dlx())));
        args
    }

    pub async fn declare(&self, ch: &Channel) -> lapin::Result<()> {
        let durable = QueueDeclareOptions { durable: true, ..Default::default() };
        ch.exchange_declare(
            self.dlx().as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions { durable: true, ..Default::default() },
            FieldTable::default(),
        )
        .await?;
        let mut dlq_args = FieldTable::default();
        dlq_args.insert("x-queue-type".into(), AMQPValue::LongString(LongString::from("quorum")));
        for q in [self.dlq(), self.dlq_feed()] {
            ch.queue_declare(q.as_str().into(), durable, dlq_args.clone()).await?;
            ch.queue_bind(
                q.as_str().into(),
                self.dlx().as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        }
        ch.queue_declare(self.queue.as_str().into(), durable, self.queue_arguments()).await?;
        Ok(())
    }

    /// Deletes everything [`Self::declare`] made (tests and benchmarks clean up with it).
    pub async fn delete(&self, ch: &Channel) -> lapin::Result<()> {
        for q in [&self.queue, &self.dlq(), &self.dlq_feed()] {
            ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default()).await?;
        }
        ch.exchange_delete(self.dlx().as_str().into(), Default::default()).await
    }

    /// Ready messages and consumers of a queue, without creating it.
    pub async fn depth(ch: &Channel, queue: &str) -> lapin::Result<(u32, u32)> {
        let q = ch
            .queue_declare(
                queue.into(),
                QueueDeclareOptions { passive: true, ..Default::default() },
                FieldTable::default(),
            )
            .await?;
        Ok((q.message_count(), q.consumer_count()))
    }
}
