package setup

import (
	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/config"
)

// warnConfig logs at start-up, as warnings, what an operator should know about the config:
// each key of the file that names no setting, with its YAML path (a typo is otherwise
// silently ignored), and, where the client API runs, open registration.
func warnConfig(cfg *config.Dendrite, log *logrus.Entry, clientAPI bool) {
	for _, key := range cfg.UnknownKeys {
		log.WithField("key", key).Warn("unknown config key ignored: check its spelling and section in dendrite-config.yaml")
	}
	if !clientAPI {
		return
	}
	if !cfg.ClientAPI.RegistrationDisabled {
		// Registration has no captcha or token stage: open means open to anyone.
		log.WithField("key", "client_api.registration_disabled").Warn("registration is open to anyone " +
			"(m.login.dummy, no captcha or token): set client_api.registration_disabled: true to close it, and create " +
			"accounts with `dendrite create-account` or client_api.registration_shared_secret")
	}
}
