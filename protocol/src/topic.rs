//! The topic grammar: `dockline/v1/{site}/{device}/{channel}`.
//!
//! | channel  | direction          | payload                      |
//! |----------|--------------------|------------------------------|
//! | `events` | agent → collector  | [`Batch`](crate::Batch)      |
//! | `ack`    | collector → agent  | [`Ack`](crate::Ack)          |
//! | `status` | agent → collector  | [`Status`](crate::Status)    |
//! | `cmd`    | collector → agent  | [`Command`](crate::Command) (resend a range, …) |
//! | `media`  | agent → collector  | [`MediaChunk`](crate::MediaChunk) (a piece of a signature or photo) |
//! | `media_ack` | collector → agent | [`MediaAck`](crate::MediaAck) (how much of a medium is stored, its state) |
//!
//! `media` and `media_ack` were added in v1 as new channels (old peers never
//! subscribe to them); see [`crate::media`] for their contract. They are
//! [`MediaChannel`]s beside [`Channel`], whose four variants stay as they
//! were so a receiver's exhaustive match over them stays valid; a receiver
//! of media parses with [`Topic::parse_media`].

use alloc::format;
use alloc::string::String;
use core::fmt;

use crate::ids::{DeviceId, IdError, SiteId};

/// The first two topic levels.
pub const PREFIX: &str = "dockline/v1";

/// The last topic level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Event batches from the agent.
    Events,
    /// Acks from the collector.
    Ack,
    /// Birth, death and heartbeats from the agent.
    Status,
    /// Commands to the agent.
    Cmd,
}

/// The media channels (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaChannel {
    /// Media chunks from the agent.
    Media,
    /// Media progress from the collector.
    MediaAck,
}

impl MediaChannel {
    /// The channel's topic level.
    pub fn as_str(self) -> &'static str {
        match self {
            MediaChannel::Media => "media",
            MediaChannel::MediaAck => "media_ack",
        }
    }
}

impl Channel {
    /// The channel's topic level.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Events => "events",
            Channel::Ack => "ack",
            Channel::Status => "status",
            Channel::Cmd => "cmd",
        }
    }
}

/// A parsed topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Topic {
    /// The site level.
    pub site: SiteId,
    /// The device level.
    pub device: DeviceId,
    /// The channel level.
    pub channel: Channel,
}

/// A topic did not follow the grammar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Wrong prefix or number of levels.
    #[error(
        "topic {0:?} is not of the form dockline/v1/{{site}}/{{device}}/{{events|ack|status|cmd|media|media_ack}}"
    )]
    Shape(String),
    /// Unknown last level.
    #[error(
        "topic {0:?} ends in an unknown channel; expected events, ack, status, cmd, media or media_ack"
    )]
    Channel(String),
    /// A site or device level broke the id rule.
    #[error("topic {topic:?}: {source}")]
    Id {
        /// The topic.
        topic: String,
        /// What was wrong with the id.
        source: IdError,
    },
}

impl Topic {
    /// Builds a topic.
    pub fn new(site: SiteId, device: DeviceId, channel: Channel) -> Self {
        Self {
            site,
            device,
            channel,
        }
    }

    /// Parses a topic name.
    pub fn parse(topic: &str) -> Result<Self, TopicError> {
        let (site, device, channel) = Self::levels(topic)?;
        let channel = match channel {
            "events" => Channel::Events,
            "ack" => Channel::Ack,
            "status" => Channel::Status,
            "cmd" => Channel::Cmd,
            _ => return Err(TopicError::Channel(topic.chars().take(200).collect())),
        };
        Ok(Self {
            site,
            device,
            channel,
        })
    }

    /// Parses a media topic (`…/media`, `…/media_ack`).
    pub fn parse_media(topic: &str) -> Result<(SiteId, DeviceId, MediaChannel), TopicError> {
        let (site, device, channel) = Self::levels(topic)?;
        let channel = match channel {
            "media" => MediaChannel::Media,
            "media_ack" => MediaChannel::MediaAck,
            _ => return Err(TopicError::Channel(topic.chars().take(200).collect())),
        };
        Ok((site, device, channel))
    }

    /// A media topic of one device.
    pub fn media(site: &SiteId, device: &DeviceId, channel: MediaChannel) -> String {
        format!("{PREFIX}/{site}/{device}/{}", channel.as_str())
    }

    /// The site and device levels, checked, and the last level.
    fn levels(topic: &str) -> Result<(SiteId, DeviceId, &str), TopicError> {
        let shape = || TopicError::Shape(topic.chars().take(200).collect());
        let rest = topic
            .strip_prefix(PREFIX)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(shape)?;
        let mut parts = rest.split('/');
        let (Some(site), Some(device), Some(channel), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(shape());
        };
        let id_err = |source| TopicError::Id {
            topic: topic.chars().take(200).collect(),
            source,
        };
        let site = SiteId::new(site).map_err(id_err)?;
        let device = DeviceId::new(device).map_err(id_err)?;
        Ok((site, device, channel))
    }

    /// The subscription filter for one channel of every device on every site
    /// (`dockline/v1/+/+/events`).
    pub fn all(channel: Channel) -> String {
        format!("{PREFIX}/+/+/{}", channel.as_str())
    }

    /// [`Topic::all`] for a media channel (`dockline/v1/+/+/media`).
    pub fn all_media(channel: MediaChannel) -> String {
        format!("{PREFIX}/+/+/{}", channel.as_str())
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX}/{}/{}/{}",
            self.site,
            self.device,
            self.channel.as_str()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn round_trip_and_errors() {
        let t = Topic::parse("dockline/v1/dc-north/hh-07/events").expect("valid topic");
        assert_eq!(t.site.as_str(), "dc-north");
        assert_eq!(t.channel, Channel::Events);
        assert_eq!(t.to_string(), "dockline/v1/dc-north/hh-07/events");
        assert!(matches!(
            Topic::parse("dockline/v2/a/b/events"),
            Err(TopicError::Shape(_))
        ));
        assert!(matches!(
            Topic::parse("dockline/v1/a/b/c/events"),
            Err(TopicError::Shape(_))
        ));
        assert!(matches!(
            Topic::parse("dockline/v1/a/b/pings"),
            Err(TopicError::Channel(_))
        ));
        assert!(matches!(
            Topic::parse("dockline/v1/a/+/events"),
            Err(TopicError::Id { .. })
        ));
        assert_eq!(Topic::all(Channel::Events), "dockline/v1/+/+/events");
        let (site, dev) = (
            SiteId::new("s").expect("id"),
            DeviceId::new("d").expect("id"),
        );
        for c in [MediaChannel::Media, MediaChannel::MediaAck] {
            let t = Topic::media(&site, &dev, c);
            assert_eq!(Topic::parse_media(&t), Ok((site.clone(), dev.clone(), c)));
            assert!(matches!(Topic::parse(&t), Err(TopicError::Channel(_))));
        }
        assert!(matches!(
            Topic::parse_media("dockline/v1/s/d/events"),
            Err(TopicError::Channel(_))
        ));
        assert_eq!(
            Topic::all_media(MediaChannel::MediaAck),
            "dockline/v1/+/+/media_ack"
        );
    }
}
