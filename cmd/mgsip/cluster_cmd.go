package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mgsip/mgsip/internal/cluster"
	"github.com/mgsip/mgsip/internal/config"
	"github.com/mgsip/mgsip/internal/daemon"
	"github.com/spf13/cobra"
)

func newClusterCmd(a *app) *cobra.Command {
	c := &cobra.Command{Use: "cluster", Short: "Several mgsip nodes on etcd (docs/cluster.md)"}
	c.AddCommand(newClusterStatusCmd(a))
	return c
}

func newClusterStatusCmd(a *app) *cobra.Command {
	var asJSON bool
	var timeout time.Duration
	c := &cobra.Command{
		Use:   "status FILE",
		Short: "Show the cluster's nodes, leases, gateways and calls, as etcd has them",
		Long: `Read the cluster's state from the etcd of FILE's cluster section (it works
whether or not an mgsip runs here): each live node with its addresses, what
remains of its lease, its gateways and its stored calls; the configured
gateways nobody owns; stored calls waiting for a takeover.`,
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			cfg, err := config.LoadFile(args[0], os.LookupEnv, config.AllowEmpty(true))
			var ce *config.Error
			if errors.As(err, &ce) {
				fmt.Fprintln(a.stderr, ce.Error())
				return &exitError{code: exitFailure, err: fmt.Errorf("%d problem(s) in %s", len(ce.Problems), args[0])}
			}
			if err != nil {
				return usageErr("%v", err)
			}
			if !cfg.File.Cluster.Enabled() {
				return &exitError{code: exitFailure, err: fmt.Errorf("%s has no cluster section: mgsip runs alone", args[0])}
			}
			cc, err := daemon.ClusterConfig(cfg, a.log.WithField("component", "cluster"))
			if err != nil {
				return &exitError{code: exitFailure, err: err}
			}
			cc.DialTimeout = timeout
			node, err := cluster.New(cc)
			if err != nil {
				return &exitError{code: exitFailure, err: err}
			}
			defer node.Close()
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			st, err := node.Status(ctx)
			if err != nil {
				return &exitError{code: exitTimeout, err: err}
			}
			if asJSON {
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(struct {
					Nodes        []cluster.NodeStatus `json:"nodes"`
					Unowned      []string             `json:"unowned"`
					OrphanCalls  int                  `json:"orphan_calls"`
					InvalidCalls int                  `json:"invalid_calls"`
					Ignored      []cluster.IgnoredKey `json:"ignored"`
				}{st.Nodes, st.Unowned, st.OrphanCalls, st.InvalidCalls, st.Ignored})
			}
			printClusterStatus(a, st)
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.Flags().DurationVar(&timeout, "timeout", 5*time.Second, "how long to wait for etcd")
	return c
}

func printClusterStatus(a *app, st cluster.Status) {
	w := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NODE\tMGCP\tSIP\tSTATE\tLEASE TTL\tGATEWAYS\tCALLS")
	for _, n := range st.Nodes {
		state := "up"
		if n.Draining {
			state = "draining"
		}
		ttl := "?"
		if n.TTL >= 0 {
			ttl = n.TTL.String()
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%d\n", n.Name, dash(n.MGCPAddr), dash(n.SIPAddr), state, ttl, len(n.Gateways), n.Calls)
	}
	_ = w.Flush()
	for _, n := range st.Nodes {
		if len(n.Gateways) > 0 {
			fmt.Fprintf(a.stdout, "%s: %s\n", n.Name, strings.Join(n.Gateways, " "))
		}
	}
	if len(st.Unowned) > 0 {
		fmt.Fprintf(a.stdout, "unowned: %s\n", strings.Join(st.Unowned, " "))
	}
	if st.OrphanCalls > 0 {
		fmt.Fprintf(a.stdout, "stored calls waiting for a takeover: %d\n", st.OrphanCalls)
	}
	if st.InvalidCalls > 0 {
		fmt.Fprintf(a.stdout, "invalid stored call records (deleted at the next takeover): %d\n", st.InvalidCalls)
	}
	for _, k := range st.Ignored {
		fmt.Fprintf(a.stdout, "ignored: %s: %s\n", k.Key, k.Why)
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
