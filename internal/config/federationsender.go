package config

import "time"

// FederationSender configures the federationsender: the outbound queues that send our
// events and EDUs to other servers.
type FederationSender struct {
	Database    DatabaseOptions `yaml:"database"`
	InternalAPI InternalAPI     `yaml:"internal_api"`
	// SendPresence sends our users' presence to the servers sharing a room with them.
	SendPresence bool `yaml:"send_presence"`
	// MinBackoff is the wait after a destination's first failed transaction; every further
	// failure doubles it, up to MaxBackoff.
	MinBackoff Duration `yaml:"min_backoff"`
	MaxBackoff Duration `yaml:"max_backoff"`
	// BlacklistAfter consecutive failures stop all attempts to a destination for
	// BlacklistFor, unless it shows up first (it sends us a request). Its queue is kept.
	BlacklistAfter int      `yaml:"blacklist_after"`
	BlacklistFor   Duration `yaml:"blacklist_for"`
}

func defaultFederationSender() FederationSender {
	return FederationSender{
		InternalAPI:  InternalAPI{Listen: ":7778", Connect: "http://federationsender:7778"},
		SendPresence: true, MinBackoff: Duration(time.Second), MaxBackoff: Duration(time.Hour),
		BlacklistAfter: 16, BlacklistFor: Duration(24 * time.Hour),
	}
}

func (f *FederationSender) verify(bad func(path, problem string)) {
	if f.MinBackoff <= 0 {
		bad("federation_sender.min_backoff", "must be positive")
	}
	if f.MaxBackoff < f.MinBackoff {
		bad("federation_sender.max_backoff", "must be at least min_backoff")
	}
	if f.BlacklistAfter < 1 {
		bad("federation_sender.blacklist_after", "must be at least 1")
	}
	if f.BlacklistFor <= 0 {
		bad("federation_sender.blacklist_for", "must be positive")
	}
}
