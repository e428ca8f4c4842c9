// Command dendrite runs the monolith: every component in one process, on SQLite and the
// embedded log by default. On a fresh checkout `go run ./cmd/dendrite` creates ./data with
// a development config, a signing key and the databases, and serves the client API on :8008.
// The same binary runs one component of the polylith with the component subcommand.
//
//	dendrite [--config FILE] [--data DIR] [--http-bind-address ADDR]
//	    [--https-bind-address ADDR --tls-cert FILE --tls-key FILE]
//	dendrite component --config FILE --name clientapi|roomserver|syncapi|userapi|eduserver|receiptserver|presenceserver|federationapi|federationsender|mediaapi|appservice|pushserver|searchapi [--shard I]
//	    [--internal-listen ADDR] [--public-listen ADDR]
//	dendrite create-account [--config FILE] [--data DIR] --username NAME [--password PW]
//	dendrite reindex [--config FILE] [--data DIR]
//	dendrite sample-config > dendrite-config.yaml
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/privfs"
	"github.com/matrix-org/dendrite/internal/setup"
)

func main() {
	var err error
	switch {
	case len(os.Args) > 1 && os.Args[1] == "create-account":
		err = createAccount(os.Args[2:], os.Stdin, os.Stdout)
	case len(os.Args) > 1 && os.Args[1] == "component":
		err = component(os.Args[2:])
	case len(os.Args) > 1 && os.Args[1] == "reindex":
		err = reindex(os.Args[2:], os.Stdout)
	case len(os.Args) > 1 && os.Args[1] == "sample-config":
		_, err = os.Stdout.Write(config.Sample())
	default:
		err = serve(os.Args[1:])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "dendrite:", err)
		os.Exit(1)
	}
}

// commonFlags are the flags every subcommand takes.
type commonFlags struct {
	config string
	data   string
}

func (c *commonFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.config, "config", "", "config file (default: <data>/dendrite.yaml, created on first start)")
	fs.StringVar(&c.data, "data", "", "data directory for the generated config, key, databases and log (default ./data)")
}

// load reads the config file, generating a development config in the data directory
// when no file was named and none exists yet.
func (c *commonFlags) load() (*config.Dendrite, error) {
	path := c.config
	if path == "" {
		dataDir := c.data
		if dataDir == "" {
			dataDir = "data"
		}
		path = filepath.Join(dataDir, "dendrite.yaml")
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			if err := privfs.WriteFile(path, config.DevConfig(dataDir)); err != nil {
				return nil, fmt.Errorf("write generated config: %w", err)
			}
		}
	}
	cfg, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	if c.data != "" && c.config != "" {
		cfg.Global.DataDir = c.data
	}
	return cfg, nil
}

func serve(args []string) error {
	fs := flag.NewFlagSet("dendrite", flag.ContinueOnError)
	var common commonFlags
	common.register(fs)
	bind := fs.String("http-bind-address", "", "address for the client, federation and key APIs over plain HTTP (default from config, :8008)")
	httpsBind := fs.String("https-bind-address", "", "address for the same APIs over TLS: the federation listener (default from config: federation_api.https_bind_address, none)")
	tlsCert := fs.String("tls-cert", "", "PEM certificate (chain) for --https-bind-address")
	tlsKey := fs.String("tls-key", "", "PEM private key for --https-bind-address")
	if err := fs.Parse(setup.NormaliseFlags(args)); err != nil {
		return err
	}
	cfg, err := common.load()
	if err != nil {
		return err
	}
	if *bind != "" {
		cfg.Global.HTTPBindAddress = *bind
	}
	fc := &cfg.FederationAPI
	for _, f := range []struct{ flag, key *string }{{httpsBind, &fc.HTTPSBindAddress}, {tlsCert, &fc.TLSCert}, {tlsKey, &fc.TLSKey}} {
		if *f.flag != "" {
			*f.key = *f.flag
		}
	}
	if err = cfg.Verify(); err != nil { // the flags may have made the config invalid
		return err
	}
	logger := logrus.New()
	if err = cfg.Global.Logging.Apply(logger); err != nil {
		return err
	}
	var tlsListeners []setup.TLSListener
	if fc.HTTPSBindAddress != "" {
		// Load the pair now so that a bad certificate stops the start, not the first request.
		if _, err = tls.LoadX509KeyPair(fc.TLSCert, fc.TLSKey); err != nil {
			return fmt.Errorf("load TLS certificate: %w", err)
		}
		tl, err := net.Listen("tcp", fc.HTTPSBindAddress)
		if err != nil {
			return err
		}
		tlsListeners = append(tlsListeners, setup.TLSListener{Listener: tl, CertFile: fc.TLSCert, KeyFile: fc.TLSKey})
		logger.WithField("address", tl.Addr().String()).Info("dendrite monolith listening over TLS (federation)")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	m, err := setup.NewMonolith(ctx, cfg, logger)
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", cfg.Global.HTTPBindAddress)
	if err != nil {
		return err
	}
	logger.WithFields(logrus.Fields{"server_name": cfg.Global.ServerName, "address": l.Addr().String()}).Info("dendrite monolith listening")
	return m.Run(ctx, l, tlsListeners...)
}

// component runs one component of the polylith (global.log.kind: kafka).
func component(args []string) error {
	fs := flag.NewFlagSet("component", flag.ContinueOnError)
	var common commonFlags
	common.register(fs)
	var opts setup.ComponentOptions
	fs.StringVar(&opts.Name, "name", "", "component to run: "+strings.Join(config.Components, ", "))
	fs.IntVar(&opts.Shard, "shard", 0, "roomserver shard index, 0 to room_server.shards-1")
	fs.StringVar(&opts.InternalListen, "internal-listen", "", "address for the internal API, /health, /ready and /metrics (default: the component's internal_api.listen)")
	fs.StringVar(&opts.PublicListen, "public-listen", "", "address for the public routes of clientapi, syncapi and federationapi (default: their listen)")
	if err := fs.Parse(setup.NormaliseFlags(args)); err != nil {
		return err
	}
	if opts.Name == "" {
		return errors.New("--name is required")
	}
	cfg, err := common.load()
	if err != nil {
		return err
	}
	logger := logrus.New()
	if err = cfg.Global.Logging.Apply(logger); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return setup.RunComponent(ctx, cfg, logger, opts)
}

func createAccount(args []string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet("create-account", flag.ContinueOnError)
	var common commonFlags
	common.register(fs)
	username := fs.String("username", "", "localpart of the new account")
	password := fs.String("password", "", "password (read from standard input when empty)")
	if err := fs.Parse(setup.NormaliseFlags(args)); err != nil {
		return err
	}
	if *username == "" {
		return errors.New("--username is required")
	}
	cfg, err := common.load()
	if err != nil {
		return err
	}
	pw := *password
	if pw == "" {
		b, err := io.ReadAll(io.LimitReader(stdin, 1024))
		if err != nil {
			return err
		}
		pw = strings.TrimRight(string(b), "\r\n")
	}
	userID, err := setup.CreateAccount(context.Background(), cfg, *username, pw)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, "created", userID)
	return nil
}

// reindex rebuilds the search index from the roomserver's stored timelines; see
// setup.Reindex for what must run and what must be stopped.
func reindex(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("reindex", flag.ContinueOnError)
	var common commonFlags
	common.register(fs)
	if err := fs.Parse(setup.NormaliseFlags(args)); err != nil {
		return err
	}
	cfg, err := common.load()
	if err != nil {
		return err
	}
	logger := logrus.New()
	if err = cfg.Global.Logging.Apply(logger); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	stats, err := setup.Reindex(ctx, cfg, logger)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, "reindexed", stats.Events, "events in", stats.Rooms, "rooms")
	return nil
}
