package internal

import "github.com/prometheus/client_golang/prometheus"

// Metrics counts account events.
type Metrics struct {
	accountsCreated prometheus.Counter
	passwordChecks  *prometheus.CounterVec
}

// NewMetrics makes the counters and registers them on reg when it is not nil.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		accountsCreated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dendrite_userapi_accounts_created_total", Help: "Accounts created.",
		}),
		passwordChecks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dendrite_userapi_password_checks_total", Help: "Password checks by outcome.",
		}, []string{"outcome"}),
	}
	if reg != nil {
		reg.MustRegister(m.accountsCreated, m.passwordChecks)
	}
	return m
}
