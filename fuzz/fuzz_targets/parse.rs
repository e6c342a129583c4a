//! Message parsing never panics, whatever the bytes, and what it accepts is well formed:
//! a rejection always carries a reason code and a single-line detail; an accepted message has
//! a valid id and the type its routing key names.
#![no_main]

use capture_worker::queue::wire::{self, Command, MessageType};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = wire::peek_order_id(data);
    for routing_key in [None, Some("shipment.shipped"), Some("order.authorized")] {
        match wire::parse(data, routing_key) {
            Ok(parsed) => {
                assert!(!parsed.envelope.message_id.as_str().is_empty());
                if let Some(rk) = routing_key {
                    assert_eq!(parsed.envelope.message_type.as_str(), rk);
                }
                match &parsed.command {
                    Command::RegisterOrder(order) => {
                        assert_eq!(parsed.envelope.message_type, MessageType::OrderAuthorized);
                        assert!(!order.lines().is_empty());
                        // The total is the sum of the line nets plus shipping.
                        let nets: i64 = order.line_nets().iter().map(|n| n.get()).sum();
                        assert_eq!(
                            order.total().amount().get(),
                            nets + order.shipping_amount().get()
                        );
                    }
                    Command::Ship { shipment, .. } => {
                        assert_eq!(parsed.envelope.message_type, MessageType::ShipmentShipped);
                        assert!(!shipment.items().is_empty());
                    }
                    Command::Cancel { cancellation, .. } => {
                        assert_eq!(parsed.envelope.message_type, MessageType::LinesCancelled);
                        assert!(!cancellation.items().is_empty());
                    }
                }
            }
            Err(rejection) => {
                assert!(!rejection.reason.as_str().is_empty());
                assert!(!rejection.detail.contains('\n'), "{rejection:?}");
            }
        }
    }
});
