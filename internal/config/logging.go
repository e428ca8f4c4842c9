package config

import "github.com/sirupsen/logrus"

func parseLevel(s string) (logrus.Level, error) {
	return logrus.ParseLevel(s)
}

// Apply configures logger.
func (l LoggingOptions) Apply(logger *logrus.Logger) error {
	level, err := parseLevel(l.Level)
	if err != nil {
		return err
	}
	logger.SetLevel(level)
	if l.Format == "json" {
		logger.SetFormatter(&logrus.JSONFormatter{})
	}
	return nil
}
