package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/mgsip/mgsip/mgcp"
	"github.com/spf13/cobra"
)

func newMGCPCmd(a *app) *cobra.Command {
	c := &cobra.Command{
		Use:   "mgcp",
		Short: "Talk MGCP by hand: check messages, send commands",
	}
	c.AddCommand(newLintCmd(a), newSendCmd(a))
	return c
}

// jsonMessage is the --json view of a parsed message.
type jsonMessage struct {
	File          string `json:"file"`
	Kind          string `json:"kind"`
	Verb          string `json:"verb,omitempty"`
	Code          string `json:"code,omitempty"`
	TransactionID uint32 `json:"transaction_id"`
	Endpoint      string `json:"endpoint,omitempty"`
	Version       string `json:"version,omitempty"`
	Profile       string `json:"profile,omitempty"`
	Package       string `json:"package,omitempty"`
	Comment       string `json:"comment,omitempty"`
	mgcp.Parameters
	SDP   string `json:"sdp,omitempty"`
	Error string `json:"error,omitempty"`
}

func toJSON(file string, m mgcp.Message) jsonMessage {
	switch m := m.(type) {
	case *mgcp.Command:
		return jsonMessage{File: file, Kind: "command", Verb: string(m.Verb), TransactionID: m.TransactionID,
			Endpoint: m.Endpoint.String(), Version: m.Version, Profile: m.Profile, Parameters: m.Parameters, SDP: string(m.SDP)}
	case *mgcp.Response:
		return jsonMessage{File: file, Kind: "response", Code: m.Code.String(), TransactionID: m.TransactionID,
			Package: m.Package, Comment: m.Comment, Parameters: m.Parameters, SDP: string(m.SDP)}
	}
	return jsonMessage{File: file}
}

func describe(m mgcp.Message) string {
	switch m := m.(type) {
	case *mgcp.Command:
		return fmt.Sprintf("%s %d", m.Verb, m.TransactionID)
	case *mgcp.Response:
		return fmt.Sprintf("%s %d", m.Code, m.TransactionID)
	}
	return "?"
}

func newLintCmd(a *app) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "lint FILE...",
		Short: "Check that files hold well-formed MGCP messages",
		Long: `Parse each file as one MGCP message or a piggybacked set ("." lines) and
print one line per message: "FILE: ok CRCX 1204", or "FILE:LINE:COL: reason".
Use "-" to read standard input. Exit status: 0 all well-formed, 1 some
malformed, 2 usage error.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(_ *cobra.Command, files []string) error {
			bad := 0
			enc := json.NewEncoder(a.stdout)
			enc.SetIndent("", "  ")
			for _, f := range files {
				data, err := readInput(a, f)
				if err != nil {
					return &exitError{code: exitUsage, err: err}
				}
				msgs, perr := mgcp.ParseDatagram(data)
				for _, m := range msgs {
					if asJSON {
						if err := enc.Encode(toJSON(f, m)); err != nil {
							return err
						}
					} else {
						fmt.Fprintf(a.stdout, "%s: ok %s\n", f, describe(m))
					}
				}
				if perr != nil {
					bad++
					var pe *mgcp.ParseError
					if errors.As(perr, &pe) {
						if asJSON {
							_ = enc.Encode(jsonMessage{File: f, Error: fmt.Sprintf("%d:%d: %s", pe.Line, pe.Column, pe.Reason), Code: pe.ReturnCode().String()})
						} else {
							fmt.Fprintf(a.stdout, "%s:%d:%d: %s (would answer %s)\n", f, pe.Line, pe.Column, reasonWithText(pe), pe.ReturnCode())
						}
					} else {
						fmt.Fprintf(a.stdout, "%s: %v\n", f, perr)
					}
				}
			}
			if bad > 0 {
				return &exitError{code: exitFailure, err: fmt.Errorf("%d of %d inputs malformed", bad, len(files))}
			}
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print the parsed structure as JSON")
	return c
}

func reasonWithText(pe *mgcp.ParseError) string {
	if pe.Text != "" {
		return fmt.Sprintf("%s: %q", pe.Reason, pe.Text)
	}
	return pe.Reason
}

func readInput(a *app, name string) ([]byte, error) {
	if name == "-" {
		return io.ReadAll(a.stdin)
	}
	return os.ReadFile(name)
}

func newSendCmd(a *app) *cobra.Command {
	var to, bind string
	var timeout time.Duration
	c := &cobra.Command{
		Use:   "send --to HOST:PORT (MESSAGE|@FILE|-)",
		Short: "Send one MGCP command with retransmission and print the response",
		Long: `Send one command to a gateway the way the call agent does (retransmission
with exponential backoff, "000" when the answer asks for it) and print the
response. In MESSAGE, "\n" stands for a line break; the message must carry
a transaction id (1 to 999999999).
Exit status: 0 for a 2xx answer, 1 for any other answer, 2 usage error,
3 no answer.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if to == "" {
				return usageErr("--to is required")
			}
			var data []byte
			var err error
			switch {
			case args[0] == "-":
				data, err = io.ReadAll(a.stdin)
			case strings.HasPrefix(args[0], "@"):
				data, err = os.ReadFile(args[0][1:])
			default:
				data = []byte(strings.ReplaceAll(args[0], `\n`, "\n"))
			}
			if err != nil {
				return usageErr("%v", err)
			}
			command, err := mgcp.ParseCommand(data)
			if err != nil {
				return usageErr("message: %v", err)
			}
			conn, err := net.ListenPacket("udp", bind)
			if err != nil {
				return usageErr("--bind: %v", err)
			}
			ca := mgcp.New(conn, mgcp.Config{}, mgcp.WithLogger(a.log.WithField("component", "mgcp")))
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			served := make(chan error, 1)
			go func() { served <- ca.Serve(ctx) }()
			defer func() {
				_ = ca.Close()
				<-served
			}()
			start := time.Now()
			r, err := ca.Do(ctx, to, command)
			if err != nil {
				if errors.Is(err, mgcp.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) {
					return &exitError{code: exitTimeout, err: err}
				}
				return err
			}
			fmt.Fprint(a.stdout, r.String())
			st := ca.Stats()
			fmt.Fprintf(a.stderr, "# %s from %s in %v, %d retransmission(s)\n", r.Code, to, time.Since(start).Round(time.Microsecond), st.Retransmissions)
			if !r.Code.IsSuccess() {
				return &exitError{code: exitFailure, err: fmt.Errorf("%s %s", r.Code, r.Comment)}
			}
			return nil
		},
	}
	c.Flags().StringVar(&to, "to", "", "gateway address host[:port] (port defaults to 2427)")
	c.Flags().StringVar(&bind, "bind", "0.0.0.0:0", "local UDP address to send from")
	c.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "give up after this long")
	return c
}

func newDigitMapCmd(a *app) *cobra.Command {
	c := &cobra.Command{
		Use:   "digitmap",
		Short: "Work with MGCP digit maps",
	}
	c.AddCommand(&cobra.Command{
		Use:   "test MAP DIGITS...",
		Short: "Match dialed strings against a digit map",
		Long: `Print "DIGITS: partial|match|nomatch|timer" for each dialed string. Append
T to a string for an expired inter-digit timer. Exit status 2 if the map
does not compile (the error says at which column).`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(_ *cobra.Command, args []string) error {
			dm, err := mgcp.CompileDigitMap(args[0])
			if err != nil {
				return usageErr("%v", err)
			}
			for _, d := range args[1:] {
				fmt.Fprintf(a.stdout, "%s: %s\n", d, dm.Match(d))
			}
			return nil
		},
	})
	return c
}
