//! The broker connection's hand-off of device messages to the ingester, bounded in bytes.
//!
//! The reader of the server's broker link ([`super::link`]) hands each device message over
//! without waiting while there is room, and stops reading when there is none: the broker then
//! sees TCP flow control and queues for the server, while the link's writer still sends
//! acknowledgements and pings. How much waits here is bounded by the broker, which sends no more
//! than its in-flight window of unacknowledged messages (Mosquitto as `mosquitto-config` writes
//! it: 1,000; rumqttd: 500), and, whatever a broker does, by [`QUEUE_BYTES`].

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::link::Delivery;

/// Bytes of device messages the hand-off holds before the broker connection waits for the
/// ingester: the broker's in-flight window of the largest messages brokers pass
/// ([`crate::broker::MAX_PACKET_BYTES`]) would be 512 MiB at Mosquitto's 1,000.
pub(super) const QUEUE_BYTES: usize = 64 * 1024 * 1024;

/// Bytes a message is counted for beyond its topic and payload (its place in the queue and the
/// client's copy of its header), so that a flood of empty messages is bounded too.
const OVERHEAD_BYTES: usize = 128;

/// A device message waiting for the ingester, with the room it takes until it is dropped (once
/// stored, or given up at shutdown).
#[derive(Debug)]
pub(super) struct Queued {
    pub(super) delivery: Delivery,
    _room: OwnedSemaphorePermit,
}

impl Queued {
    /// The message, its room in the hand-off given back.
    pub(super) fn done(self) -> Delivery {
        self.delivery
    }
}

#[derive(Debug, Clone)]
pub(super) struct Sender {
    queue: mpsc::UnboundedSender<Queued>,
    room: Arc<Semaphore>,
    queue_bytes: usize,
}

pub(super) type Receiver = mpsc::UnboundedReceiver<Queued>;

/// The ingester has stopped taking messages.
#[derive(Debug)]
pub(super) struct Closed;

/// A hand-off that holds up to `queue_bytes` (at most `u32::MAX`).
pub(super) fn handoff(queue_bytes: usize) -> (Sender, Receiver) {
    let queue_bytes = queue_bytes.min(u32::MAX as usize);
    let (queue, receiver) = mpsc::unbounded_channel();
    let room = Arc::new(Semaphore::new(queue_bytes));
    (
        Sender {
            queue,
            room,
            queue_bytes,
        },
        receiver,
    )
}

/// The room `delivery` takes in a queue of `queue_bytes` (≤ `u32::MAX`).
fn cost(delivery: &Delivery, queue_bytes: usize) -> u32 {
    let publish = &delivery.publish;
    let bytes = publish.topic.len() + publish.payload.len() + OVERHEAD_BYTES;
    // A message larger than the whole queue (none a broker passes) waits for an empty one.
    bytes.min(queue_bytes) as u32
}

impl Sender {
    /// Hands `delivery` over at once if there is room; if there is none, hands it back
    /// (`Ok(Err(delivery))`) to wait with [`Sender::send`].
    pub(super) fn try_send(&self, delivery: Delivery) -> Result<Result<(), Delivery>, Closed> {
        let bytes = cost(&delivery, self.queue_bytes);
        match self.room.clone().try_acquire_many_owned(bytes) {
            Ok(room) => self
                .queue
                .send(Queued {
                    delivery,
                    _room: room,
                })
                .map(Ok)
                .map_err(|_| Closed),
            Err(_) => Ok(Err(delivery)),
        }
    }

    /// Hands `delivery` over once there is room for it.
    pub(super) async fn send(&self, delivery: Delivery) -> Result<(), Closed> {
        let bytes = cost(&delivery, self.queue_bytes);
        let room = self
            .room
            .clone()
            .acquire_many_owned(bytes)
            .await
            .map_err(|_| Closed)?;
        self.queue
            .send(Queued {
                delivery,
                _room: room,
            })
            .map_err(|_| Closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST_BYTES: usize = 1 << 20;

    fn publish(payload: usize) -> Delivery {
        Delivery {
            publish: rumqttc::Publish::new(
                "edgefleet/v1/devices/d1/events",
                rumqttc::QoS::AtLeastOnce,
                vec![0u8; payload],
            ),
            ack: None,
        }
    }

    #[tokio::test]
    async fn messages_pass_without_waiting_until_their_bytes_fill_the_queue() {
        let (sender, mut receiver) = handoff(TEST_BYTES);
        let one = cost(&publish(1_000), TEST_BYTES) as usize;
        let fit = TEST_BYTES / one;
        for _ in 0..fit {
            assert!(sender.try_send(publish(1_000)).unwrap().is_ok());
        }
        let refused = sender.try_send(publish(1_000)).unwrap().unwrap_err();
        // Waits until the ingester drops a message it took, then goes through.
        let waiting = tokio::spawn({
            let sender = sender.clone();
            async move { sender.send(refused).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(receiver.recv().await.unwrap());
        waiting.await.unwrap().unwrap();
        assert!(
            sender.try_send(publish(1_000)).unwrap().is_err(),
            "full again"
        );
    }

    #[tokio::test]
    async fn empty_messages_take_room_too() {
        let (sender, _receiver) = handoff(TEST_BYTES);
        let mut passed = 0usize;
        while sender.try_send(publish(0)).unwrap().is_ok() {
            passed += 1;
        }
        assert!(passed < TEST_BYTES / OVERHEAD_BYTES);
    }

    #[test]
    fn a_stopped_ingester_is_told() {
        let (sender, receiver) = handoff(TEST_BYTES);
        drop(receiver);
        assert!(sender.try_send(publish(10)).is_err());
    }
}
