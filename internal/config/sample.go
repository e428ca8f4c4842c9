package config

import (
	"crypto/rand"
	"encoding/hex"
	"strings"

	"gopkg.in/yaml.v3"
)

const sampleHeader = `# Dendrite configuration. Every key is shown with its default; a file with only the keys
# you change works the same. Any key can also be set from the environment as
# DENDRITE_<YAML_PATH_UPPER>, e.g. DENDRITE_CLIENT_API_REGISTRATION_SHARED_SECRET.
# Database connection strings are empty by default: each component then uses a SQLite file
# in global.data_dir. Set global.database.connection_string to a postgres:// DSN to put
# every component on PostgreSQL.
`

// Sample is the documented sample config: the defaults, with a header.
func Sample() []byte {
	b, err := yaml.Marshal(Defaults())
	if err != nil {
		// Marshalling a fixed struct of plain fields cannot fail.
		panic(err)
	}
	return append([]byte(sampleHeader), b...)
}

// DevConfig is what a fresh monolith writes to <data_dir>/dendrite.yaml: the defaults with
// open registration and a random registration shared secret.
func DevConfig(dataDir string) []byte {
	c := Defaults()
	c.Global.DataDir = dataDir
	c.ClientAPI.RegistrationDisabled = false
	secret := make([]byte, 16)
	_, _ = rand.Read(secret) // crypto/rand never fails on Linux
	c.ClientAPI.RegistrationSharedSecret = hex.EncodeToString(secret)
	b, err := yaml.Marshal(c)
	if err != nil {
		panic(err)
	}
	header := strings.Replace(sampleHeader, "# Dendrite configuration.", "# Dendrite development configuration, generated on first start.", 1)
	return append([]byte(header), b...)
}
