//! The MQTT topic scheme (design brief §3): `edgefleet/v1/devices/{id}/{channel}`.
//!
//! | channel    | direction       | retained | QoS |
//! |------------|-----------------|----------|-----|
//! | `desired`  | server → device | yes      | 1   |
//! | `reported` | device → server | yes      | 1   |
//! | `events`   | device → server | no       | 1   |
//! | `metrics`  | device → server | no       | 1   |
//!
//! The server reads device channels through a shared subscription ([`server_subscription`]) so that
//! several replicas split the load; brokers deliver the plain topic name, which [`Topic::parse`]
//! turns back into a device id and channel.

use std::fmt;

use crate::{DeviceId, Error};

/// Prefix of every Edgefleet topic; the `v1` is the topic scheme's version, bumped only when the
/// layout below it changes.
pub const TOPIC_PREFIX: &str = "edgefleet/v1/devices";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    Desired,
    Reported,
    Events,
    Metrics,
}

impl Channel {
    pub const ALL: [Channel; 4] = [
        Channel::Desired,
        Channel::Reported,
        Channel::Events,
        Channel::Metrics,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Desired => "desired",
            Channel::Reported => "reported",
            Channel::Events => "events",
            Channel::Metrics => "metrics",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Whether the broker should keep the last message for late subscribers.
    pub fn retained(self) -> bool {
        matches!(self, Channel::Desired | Channel::Reported)
    }

    /// Whether the device is the publisher (and the server the consumer).
    pub fn from_device(self) -> bool {
        !matches!(self, Channel::Desired)
    }
}

/// One device's topic on one channel.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Topic {
    pub device: DeviceId,
    pub channel: Channel,
}

impl Topic {
    pub fn new(device: DeviceId, channel: Channel) -> Self {
        Self { device, channel }
    }

    /// Parses a concrete topic name as a broker delivers it. Filters (`+`, `#`), other prefixes,
    /// extra or missing levels and invalid device ids are errors.
    pub fn parse(topic: &str) -> Result<Self, Error> {
        let invalid = |reason| Error::InvalidTopic {
            topic: topic.chars().take(200).collect(),
            reason,
        };
        let rest = topic
            .strip_prefix(TOPIC_PREFIX)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(|| invalid("does not start with edgefleet/v1/devices/"))?;
        let mut levels = rest.split('/');
        let (Some(device), Some(channel), None) = (levels.next(), levels.next(), levels.next())
        else {
            return Err(invalid(
                "expected exactly {device}/{channel} after the prefix",
            ));
        };
        let device =
            DeviceId::new(device).map_err(|_| invalid("device level is not a valid device id"))?;
        let channel = Channel::parse(channel)
            .ok_or_else(|| invalid("channel must be desired, reported, events or metrics"))?;
        Ok(Self { device, channel })
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{TOPIC_PREFIX}/{}/{}",
            self.device,
            self.channel.as_str()
        )
    }
}

/// The filter a server replica subscribes with to consume one device channel of the whole fleet,
/// as an MQTT 5 / 3.1.1-extension shared subscription, so each message goes to one replica of
/// `group`.
pub fn server_subscription(group: &str, channel: Channel) -> String {
    format!("$share/{group}/{TOPIC_PREFIX}/+/{}", channel.as_str())
}

/// The filter covering one device's topics on every channel; broker ACLs grant a device exactly
/// this (publish on its own device channels, subscribe to its own `desired`).
pub fn device_filter(device: &DeviceId) -> String {
    format!("{TOPIC_PREFIX}/{device}/#")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(s: &str) -> DeviceId {
        DeviceId::new(s).unwrap()
    }

    #[test]
    fn builds_and_parses_every_channel() {
        for channel in Channel::ALL {
            let topic = Topic::new(dev("pump-7"), channel);
            let s = topic.to_string();
            assert_eq!(
                s,
                format!("edgefleet/v1/devices/pump-7/{}", channel.as_str())
            );
            assert_eq!(Topic::parse(&s).unwrap(), topic);
        }
    }

    #[test]
    fn wildcards_extra_levels_and_foreign_prefixes_are_refused() {
        for bad in [
            "",
            "edgefleet/v1/devices/+/reported",
            "edgefleet/v1/devices/#",
            "edgefleet/v1/devices/a/reported/extra",
            "edgefleet/v1/devices/a",
            "edgefleet/v1/devices//reported",
            "edgefleet/v2/devices/a/reported",
            "edgefleet/v1/devices/a/status",
            "$share/g/edgefleet/v1/devices/a/reported",
            "edgefleet/v1/devicesX/a/reported",
        ] {
            assert!(
                matches!(Topic::parse(bad), Err(Error::InvalidTopic { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn subscription_filters() {
        assert_eq!(
            server_subscription("edgefleet-server", Channel::Events),
            "$share/edgefleet-server/edgefleet/v1/devices/+/events"
        );
        assert_eq!(device_filter(&dev("d1")), "edgefleet/v1/devices/d1/#");
        assert!(Channel::Desired.retained() && !Channel::Desired.from_device());
        assert!(!Channel::Events.retained() && Channel::Metrics.from_device());
    }
}
