// Command mgsip is an MGCP call agent that fronts MGCP gateways and phones
// to SIP PBXes and providers.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/mgsip/mgsip/internal/buildinfo"
	"github.com/mgsip/mgsip/internal/daemon"
	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
)

// exitError carries a process exit code through cobra.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// Exit codes shared by the subcommands.
const (
	exitOK      = 0
	exitFailure = 1 // the command ran and the answer is "no" (malformed, non-2xx, ...)
	exitUsage   = 2 // bad flags or arguments
	exitTimeout = 3 // no answer from the network
)

func usageErr(format string, a ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, a...)}
}

// app holds what every subcommand shares.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	logLevel       string
	logFormat      string
	log            *logrus.Logger
}

func newRootCmd(a *app) *cobra.Command {
	root := &cobra.Command{
		Use:           "mgsip",
		Short:         "SIP-to-MGCP interworking: an MGCP call agent that speaks SIP to your PBX",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return a.setupLogging()
		},
	}
	root.SetIn(a.stdin)
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	root.PersistentFlags().StringVar(&a.logLevel, "log-level", "info", "log level: trace, debug, info, warn, error")
	root.PersistentFlags().StringVar(&a.logFormat, "log-format", "text", "log format: text or json")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &exitError{code: exitUsage, err: err} })
	root.AddCommand(
		newVersionCmd(a),
		newMGCPCmd(a),
		newDigitMapCmd(a),
		newDemoCmd(a),
		newSimCmd(a),
		newCheckConfigCmd(a),
		newRunCmd(a),
		newLadderCmd(a),
		newImportCmd(a),
		newClusterCmd(a),
	)
	root.AddCommand(adminCommands(a)...)
	return root
}

// setupLogging configures the one logger of the process.
func (a *app) setupLogging() error {
	lvl, err := logrus.ParseLevel(a.logLevel)
	if err != nil {
		return usageErr("--log-level: %v", err)
	}
	l := logrus.New()
	l.SetOutput(a.stderr)
	l.SetLevel(lvl)
	switch strings.ToLower(a.logFormat) {
	case "text":
		l.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, TimestampFormat: daemon.LogTimeFormat})
	case "json":
		l.SetFormatter(&logrus.JSONFormatter{TimestampFormat: daemon.LogTimeFormat})
	default:
		return usageErr("--log-format: want text or json, got %q", a.logFormat)
	}
	a.log = l
	return nil
}

func newVersionCmd(a *app) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit, build date and Go version",
		Long: `Print which mgsip this is: the version, the commit it was built from
(with -dirty when the tree had changes) and its date, and the Go toolchain.
They come from the VCS stamps in the binary; "make build" sets them with
-ldflags. --json prints them as an object.`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			bi := buildinfo.Get()
			if asJSON {
				enc := json.NewEncoder(a.stdout)
				return enc.Encode(bi)
			}
			fmt.Fprintln(a.stdout, bi.String())
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

// run executes the CLI and returns the process exit code.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr}
	root := newRootCmd(a)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return exitOK
	}
	fmt.Fprintln(stderr, "mgsip:", err)
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	if strings.HasPrefix(err.Error(), "unknown command") || strings.Contains(err.Error(), "arg(s)") {
		return exitUsage
	}
	return exitFailure
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
