//! Which of a stream's two sources is on air: the primary encoder or the
//! backup (`?backup=1`), with automatic failover, failback after a hold-off
//! and a source an operator forces.
//!
//! Sans-IO, in the quinn-proto style: inputs in (`connected`, `media`,
//! `disconnected`, `force`), a decision out (`decide`), and `poll_timeout`
//! for when a decision may change with nothing else happening. No clock and
//! no tasks inside: the caller passes `now` and owns the timer. The caller
//! also performs a switch (at a keyframe, on the session's timeline) and
//! reports it with `switched`; until then the arbiter keeps asking. The hub
//! asks at each message of the source that would go on air, since a switch
//! needs that source's media anyway, so it sets no timer from
//! `poll_timeout`.
//!
//! What is left to the hub: the standby clip and the grace period, which
//! begin where the arbiter has no healthy source to offer.

use std::time::{Duration, Instant};

/// A source of a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SourceRole {
    Primary,
    Backup,
}

impl SourceRole {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceRole::Primary => "primary",
            SourceRole::Backup => "backup",
        }
    }

    /// 0 for the primary, 1 for the backup: an index into per-source arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    fn other(self) -> SourceRole {
        match self {
            SourceRole::Primary => SourceRole::Backup,
            SourceRole::Backup => SourceRole::Primary,
        }
    }
}

/// What an operator asks for (`PUT /v1/streams/{id}/source`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceChoice {
    /// Failover and failback by the rules.
    Auto,
    /// This source whenever it is healthy; the rules when it is not.
    Forced(SourceRole),
}

/// The per-stream rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArbiterConfig {
    /// A source that sent no media for this long is not healthy: the other
    /// one takes over (`failover_after_ms`).
    pub failover_after: Duration,
    /// Whether a returning primary takes over from the backup (`failback`).
    pub failback: bool,
    /// How long the primary must have been healthy, without a drop, before
    /// it takes over again (`failback_after_s`).
    pub failback_after: Duration,
}

impl Default for ArbiterConfig {
    fn default() -> Self {
        Self {
            failover_after: Duration::from_millis(1000),
            failback: true,
            failback_after: Duration::from_secs(10),
        }
    }
}

/// Why a source goes on air.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwitchReason {
    /// Nothing was on air: the first healthy source starts the show (or
    /// takes it over from the standby clip or the grace period).
    Start,
    /// The source on air disconnected.
    Disconnect,
    /// The source on air sent nothing for `failover_after`.
    Silence,
    /// The primary has been healthy for `failback_after`.
    Failback,
    /// An operator forced this source.
    Forced,
}

impl SwitchReason {
    pub const ALL: [SwitchReason; 5] = [
        SwitchReason::Start,
        SwitchReason::Disconnect,
        SwitchReason::Silence,
        SwitchReason::Failback,
        SwitchReason::Forced,
    ];

    /// The label of `prism_stream_source_switches_total` and of the
    /// `source_switch` event.
    pub fn as_str(self) -> &'static str {
        match self {
            SwitchReason::Start => "start",
            SwitchReason::Disconnect => "disconnect",
            SwitchReason::Silence => "silence",
            SwitchReason::Failback => "failback",
            SwitchReason::Forced => "forced",
        }
    }

    /// Whether the source on air is gone or silent: the switch cannot wait
    /// for the new source's next keyframe (the hub starts it from its
    /// cached one), where a failback or a forced switch can.
    pub fn is_urgent(self) -> bool {
        matches!(
            self,
            SwitchReason::Start | SwitchReason::Disconnect | SwitchReason::Silence
        )
    }
}

/// A source the arbiter wants on air, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Switch {
    pub to: SourceRole,
    pub reason: SwitchReason,
}

#[derive(Clone, Copy, Debug, Default)]
struct Source {
    connected: bool,
    /// When its last media message arrived.
    last_media: Option<Instant>,
    /// Since when it has been connected and sending without a gap of
    /// `failover_after`: the failback hold-off counts from here.
    healthy_since: Option<Instant>,
}

/// The decision core. See the module documentation.
#[derive(Debug)]
pub struct SourceArbiter {
    config: ArbiterConfig,
    sources: [Source; 2],
    on_air: Option<SourceRole>,
    /// The source on air disconnected: the next switch is a failover.
    lost_on_air: bool,
    choice: SourceChoice,
}

impl Default for SourceArbiter {
    fn default() -> Self {
        Self::new(ArbiterConfig::default())
    }
}

impl SourceArbiter {
    pub fn new(config: ArbiterConfig) -> Self {
        Self {
            config,
            sources: Default::default(),
            on_air: None,
            lost_on_air: false,
            choice: SourceChoice::Auto,
        }
    }

    pub fn set_config(&mut self, config: ArbiterConfig) {
        self.config = config;
    }

    pub fn config(&self) -> ArbiterConfig {
        self.config
    }

    /// The source whose media the destinations get, if any.
    pub fn on_air(&self) -> Option<SourceRole> {
        self.on_air
    }

    pub fn choice(&self) -> SourceChoice {
        self.choice
    }

    /// Whether `role` is connected and sending.
    pub fn is_healthy(&self, role: SourceRole, now: Instant) -> bool {
        let source = &self.sources[role.index()];
        source.connected
            && source
                .last_media
                .is_some_and(|at| now.saturating_duration_since(at) < self.config.failover_after)
    }

    /// A source began publishing.
    pub fn connected(&mut self, role: SourceRole, _now: Instant) {
        self.sources[role.index()] = Source {
            connected: true,
            ..Source::default()
        };
    }

    /// A media message (audio or video) of `role` arrived.
    pub fn media(&mut self, role: SourceRole, now: Instant) {
        let failover_after = self.config.failover_after;
        let source = &mut self.sources[role.index()];
        if !source.connected {
            return;
        }
        let gap = source
            .last_media
            .is_none_or(|at| now.saturating_duration_since(at) >= failover_after);
        if gap {
            source.healthy_since = Some(now);
        }
        source.last_media = Some(now);
    }

    /// A source's connection ended.
    pub fn disconnected(&mut self, role: SourceRole, _now: Instant) {
        self.sources[role.index()] = Source::default();
        if self.on_air == Some(role) {
            self.on_air = None;
            self.lost_on_air = true;
        }
    }

    /// An operator's choice; it holds until the next one.
    pub fn force(&mut self, choice: SourceChoice) {
        self.choice = choice;
    }

    /// The source that should be on air at `now`, when it is not: the
    /// caller switches to it (at a keyframe) and calls `switched`.
    pub fn decide(&mut self, now: Instant) -> Option<Switch> {
        let healthy = |role| self.is_healthy(role, now);
        let on_air_healthy = self.on_air.is_some_and(healthy);
        if let SourceChoice::Forced(role) = self.choice {
            if healthy(role) {
                return (self.on_air != Some(role)).then_some(Switch {
                    to: role,
                    reason: SwitchReason::Forced,
                });
            }
        }
        match self.on_air {
            Some(current) if on_air_healthy => {
                let primary = &self.sources[SourceRole::Primary.index()];
                let failback_due = current == SourceRole::Backup
                    && self.config.failback
                    && healthy(SourceRole::Primary)
                    && primary.healthy_since.is_some_and(|since| {
                        now.saturating_duration_since(since) >= self.config.failback_after
                    });
                failback_due.then_some(Switch {
                    to: SourceRole::Primary,
                    reason: SwitchReason::Failback,
                })
            }
            Some(current) => {
                let other = current.other();
                healthy(other).then_some(Switch {
                    to: other,
                    reason: SwitchReason::Silence,
                })
            }
            None => {
                let reason = if self.lost_on_air {
                    SwitchReason::Disconnect
                } else {
                    SwitchReason::Start
                };
                [SourceRole::Primary, SourceRole::Backup]
                    .into_iter()
                    .find(|&role| healthy(role))
                    .map(|to| Switch { to, reason })
            }
        }
    }

    /// The caller put `role` on air.
    pub fn switched(&mut self, role: SourceRole) {
        self.on_air = Some(role);
        self.lost_on_air = false;
    }

    /// The next moment after `now` when a decision may change with no
    /// input: a source's silence turns into ill health, or the primary's
    /// failback hold-off ends. What is already due, `decide` answers now.
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        let silence = self
            .sources
            .iter()
            .filter(|s| s.connected)
            .filter_map(|s| s.last_media)
            .map(|at| at + self.config.failover_after);
        let primary = &self.sources[SourceRole::Primary.index()];
        let failback = (self.config.failback && self.on_air == Some(SourceRole::Backup))
            .then_some(primary.healthy_since)
            .flatten()
            .map(|since| since + self.config.failback_after);
        silence.chain(failback).filter(|&due| due > now).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SourceRole::{Backup, Primary};

    const FRAME: Duration = Duration::from_millis(40);

    /// An arbiter and a simulated clock; `run` feeds media from the live
    /// sources frame by frame and performs every switch asked for, keeping
    /// the switches made.
    struct Sim {
        arbiter: SourceArbiter,
        now: Instant,
        sending: [bool; 2],
        switches: Vec<(Duration, Switch)>,
        start: Instant,
    }

    impl Sim {
        fn new(config: ArbiterConfig) -> Self {
            let now = Instant::now();
            Self {
                arbiter: SourceArbiter::new(config),
                now,
                sending: [false; 2],
                switches: Vec::new(),
                start: now,
            }
        }

        fn connect(&mut self, role: SourceRole) {
            self.arbiter.connected(role, self.now);
            self.sending[role.index()] = true;
        }

        fn disconnect(&mut self, role: SourceRole) {
            self.arbiter.disconnected(role, self.now);
            self.sending[role.index()] = false;
            self.step();
        }

        /// The source keeps its connection and sends nothing (SIGSTOP).
        fn freeze(&mut self, role: SourceRole) {
            self.sending[role.index()] = false;
        }

        fn step(&mut self) {
            if let Some(switch) = self.arbiter.decide(self.now) {
                self.switches.push((self.now - self.start, switch));
                self.arbiter.switched(switch.to);
            }
        }

        fn run(&mut self, time: Duration) {
            let end = self.now + time;
            while self.now < end {
                for role in [Primary, Backup] {
                    if self.sending[role.index()] {
                        self.arbiter.media(role, self.now);
                    }
                }
                self.step();
                // The timer never needs to fire later than asked: a
                // decision waits for it, at most.
                if let Some(due) = self.arbiter.poll_timeout(self.now) {
                    assert!(due > self.now, "a deadline in the past");
                }
                self.now += FRAME;
            }
        }

        fn reasons(&self) -> Vec<(SourceRole, SwitchReason)> {
            self.switches
                .iter()
                .map(|(_, s)| (s.to, s.reason))
                .collect()
        }
    }

    #[test]
    fn the_backup_takes_over_when_the_primary_drops_and_hands_back_after_the_hold_off() {
        let mut sim = Sim::new(ArbiterConfig::default());
        sim.connect(Primary);
        sim.connect(Backup);
        sim.run(Duration::from_secs(5));
        assert_eq!(sim.arbiter.on_air(), Some(Primary));
        sim.disconnect(Primary);
        assert_eq!(
            sim.arbiter.on_air(),
            Some(Backup),
            "at once, on the disconnect"
        );
        sim.run(Duration::from_secs(3));
        sim.connect(Primary);
        sim.run(Duration::from_millis(9_900));
        assert_eq!(sim.arbiter.on_air(), Some(Backup), "the hold-off is 10 s");
        sim.run(Duration::from_millis(200));
        assert_eq!(sim.arbiter.on_air(), Some(Primary));
        assert_eq!(
            sim.reasons(),
            [
                (Primary, SwitchReason::Start),
                (Backup, SwitchReason::Disconnect),
                (Primary, SwitchReason::Failback),
            ]
        );
    }

    #[test]
    fn a_frozen_primary_gives_way_after_failover_after() {
        let mut sim = Sim::new(ArbiterConfig::default());
        sim.connect(Primary);
        sim.connect(Backup);
        sim.run(Duration::from_secs(2));
        sim.freeze(Primary);
        let frozen = sim.now - sim.start;
        sim.run(Duration::from_secs(2));
        let (at, switch) = sim.switches[1];
        assert_eq!((switch.to, switch.reason), (Backup, SwitchReason::Silence));
        let after = at - frozen;
        assert!(
            after >= Duration::from_millis(960) && after <= Duration::from_millis(1080),
            "{after:?}"
        );
    }

    #[test]
    fn a_flapping_primary_is_not_switched_to() {
        let mut sim = Sim::new(ArbiterConfig::default());
        sim.connect(Primary);
        sim.connect(Backup);
        sim.run(Duration::from_secs(1));
        sim.disconnect(Primary);
        // Back for 5 s, gone, back for 5 s, gone: never 10 s in one piece.
        for _ in 0..3 {
            sim.connect(Primary);
            sim.run(Duration::from_secs(5));
            sim.disconnect(Primary);
            sim.run(Duration::from_secs(1));
        }
        assert_eq!(sim.arbiter.on_air(), Some(Backup));
        // Silence counts as a drop too.
        sim.connect(Primary);
        sim.run(Duration::from_secs(6));
        sim.freeze(Primary);
        sim.run(Duration::from_secs(2));
        sim.connect(Primary);
        sim.run(Duration::from_secs(6));
        assert_eq!(sim.arbiter.on_air(), Some(Backup));
        assert_eq!(sim.switches.len(), 2, "{:?}", sim.reasons());
    }

    #[test]
    fn without_failback_the_backup_stays_until_it_fails() {
        let mut sim = Sim::new(ArbiterConfig {
            failback: false,
            ..ArbiterConfig::default()
        });
        sim.connect(Primary);
        sim.connect(Backup);
        sim.run(Duration::from_secs(1));
        sim.disconnect(Primary);
        sim.connect(Primary);
        sim.run(Duration::from_secs(60));
        assert_eq!(sim.arbiter.on_air(), Some(Backup));
        let next_silence = sim.now - FRAME + Duration::from_secs(1);
        assert_eq!(sim.arbiter.poll_timeout(sim.now), Some(next_silence));
        sim.disconnect(Backup);
        assert_eq!(sim.arbiter.on_air(), Some(Primary));
    }

    #[test]
    fn the_backup_alone_goes_on_air_and_both_dropping_leaves_nothing() {
        let mut sim = Sim::new(ArbiterConfig::default());
        sim.connect(Backup);
        sim.run(Duration::from_secs(1));
        assert_eq!(sim.reasons(), [(Backup, SwitchReason::Start)]);
        sim.connect(Primary);
        sim.run(Duration::from_secs(1));
        sim.disconnect(Backup);
        assert_eq!(sim.arbiter.on_air(), Some(Primary));
        sim.disconnect(Primary);
        assert_eq!(sim.arbiter.on_air(), None);
        assert_eq!(sim.arbiter.decide(sim.now), None);
        assert_eq!(
            sim.arbiter.poll_timeout(sim.now),
            None,
            "nothing to wait for"
        );
        // The first to come back restarts the show: after a drop, the
        // reason says the show was lost.
        sim.connect(Backup);
        sim.run(Duration::from_millis(100));
        assert_eq!(
            sim.reasons().last(),
            Some(&(Backup, SwitchReason::Disconnect))
        );
    }

    #[test]
    fn a_forced_source_holds_while_healthy_and_the_rules_apply_when_it_dies() {
        let mut sim = Sim::new(ArbiterConfig::default());
        sim.connect(Primary);
        sim.connect(Backup);
        sim.run(Duration::from_secs(1));
        sim.arbiter.force(SourceChoice::Forced(Backup));
        sim.run(Duration::from_secs(30));
        assert_eq!(
            sim.arbiter.on_air(),
            Some(Backup),
            "no failback while forced"
        );
        sim.disconnect(Backup);
        assert_eq!(sim.arbiter.on_air(), Some(Primary));
        // The forced source comes back: it is taken again.
        sim.connect(Backup);
        sim.run(Duration::from_millis(100));
        assert_eq!(sim.arbiter.on_air(), Some(Backup));
        sim.arbiter.force(SourceChoice::Auto);
        sim.run(Duration::from_secs(11));
        assert_eq!(sim.arbiter.on_air(), Some(Primary), "auto: failback");
        assert_eq!(
            sim.reasons(),
            [
                (Primary, SwitchReason::Start),
                (Backup, SwitchReason::Forced),
                (Primary, SwitchReason::Disconnect),
                (Backup, SwitchReason::Forced),
                (Primary, SwitchReason::Failback),
            ]
        );
    }

    #[test]
    fn a_source_that_connects_but_sends_nothing_is_not_taken() {
        let mut sim = Sim::new(ArbiterConfig::default());
        sim.connect(Primary);
        sim.freeze(Primary);
        sim.run(Duration::from_secs(1));
        assert_eq!(sim.arbiter.on_air(), None);
        sim.connect(Backup);
        sim.run(Duration::from_millis(100));
        assert_eq!(sim.arbiter.on_air(), Some(Backup));
    }

    #[test]
    fn after_both_fall_silent_the_first_to_speak_again_goes_on_air() {
        let mut sim = Sim::new(ArbiterConfig::default());
        sim.connect(Primary);
        sim.connect(Backup);
        sim.run(Duration::from_secs(1));
        // Both silent (the hub plays the standby clip): nowhere to go.
        sim.freeze(Primary);
        sim.freeze(Backup);
        sim.run(Duration::from_secs(2));
        assert_eq!(sim.switches.len(), 1);
        // The backup speaks first: it takes over from the silent primary.
        sim.sending[Backup.index()] = true;
        sim.run(Duration::from_millis(100));
        assert_eq!(sim.reasons().last(), Some(&(Backup, SwitchReason::Silence)));
    }
}
