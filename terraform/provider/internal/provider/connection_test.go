package provider

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
)

const planted = "ghp_tf-planted-secret-7c1e"

func TestAccConnection(t *testing.T) {
	config := func(orgs string) string {
		return fmt.Sprintf(`
resource "omnisql_tenant" "initech" {
  id     = "tf-initech"
  name   = "Initech"
  region = "eu"
}

resource "omnisql_connection" "github" {
  tenant         = omnisql_tenant.initech.id
  name           = "github"
  connector      = "github"
  options        = { orgs = %q, base_url = "https://api.github.com" }
  secret_options = { token = %q }
}`, orgs, planted)
	}
	raw := func(want func(string) error) resource.TestCheckFunc {
		return func(*terraform.State) error {
			var body map[string]any
			err := newClient(os.Getenv("OMNISQL_ADMIN_URL"), os.Getenv("OMNISQL_ADMIN_KEY")).
				call(context.Background(), http.MethodGet, "/v1/tenants/tf-initech/connections/github", nil, &body)
			if err != nil {
				return err
			}
			return want(fmt.Sprint(body))
		}
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: providers,
		CheckDestroy: func(*terraform.State) error {
			err := adminClient().call(context.Background(), http.MethodGet, "/v1/tenants/tf-initech/connections/github", nil, nil)
			if !isNotFound(err) {
				return fmt.Errorf("the connection outlived destroy: %v", err)
			}
			return nil
		},
		Steps: []resource.TestStep{
			{
				Config: config("initech"),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttrSet("omnisql_connection.github", "version"),
					raw(func(body string) error {
						if strings.Contains(body, planted) || !strings.Contains(body, "token") || !strings.Contains(body, "initech") {
							return fmt.Errorf("the control plane shows %s", body)
						}
						return nil
					}),
				),
			},
			// A changed option replaces the connection (the admin API has no update).
			{
				Config: config("initech-labs"),
				Check: raw(func(body string) error {
					if !strings.Contains(body, "initech-labs") {
						return fmt.Errorf("not replaced: %s", body)
					}
					return nil
				}),
			},
			{
				ResourceName: "omnisql_connection.github", ImportState: true, ImportStateId: "tf-initech/github",
				ImportStateVerify: true, ImportStateVerifyIgnore: []string{"secret_options"},
				ImportStateVerifyIdentifierAttribute: "name",
			},
		},
	})
}

// A new version upgrades the connection in place, through the control plane's smoke-tested upgrade: the
// same connection (its creation time unchanged) on the new version; a version the catalog lacks is refused.
func TestAccConnectionUpgrade(t *testing.T) {
	config := func(version string) string {
		return fmt.Sprintf(`
resource "omnisql_tenant" "upgrade" {
  id     = "tf-upgrade"
  name   = "Upgrade"
  region = "eu"
}

resource "omnisql_connection" "slack" {
  tenant         = omnisql_tenant.upgrade.id
  name           = "slack"
  connector      = "slack"
  version        = %q
  secret_options = { token = "xoxb-tf-upgrade" }
}`, version)
	}
	var created string
	shown := func(version string, remember bool) resource.TestCheckFunc {
		return func(*terraform.State) error {
			var body struct {
				Version   string `json:"version"`
				CreatedAt int64  `json:"created_at"`
			}
			if err := adminClient().call(context.Background(), http.MethodGet, "/v1/tenants/tf-upgrade/connections/slack", nil, &body); err != nil {
				return err
			}
			if body.Version != version {
				return fmt.Errorf("the control plane has version %s, not %s", body.Version, version)
			}
			at := fmt.Sprint(body.CreatedAt)
			if remember {
				created = at
			} else if at != created {
				return fmt.Errorf("the connection was replaced (created %s, then %s), not upgraded", created, at)
			}
			return nil
		}
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: providers,
		CheckDestroy: func(*terraform.State) error {
			err := adminClient().call(context.Background(), http.MethodGet, "/v1/tenants/tf-upgrade", nil, nil)
			if !isNotFound(err) {
				return fmt.Errorf("the tenant outlived destroy: %v", err)
			}
			return nil
		},
		Steps: []resource.TestStep{
			{Config: config("1.0.0"), Check: shown("1.0.0", true)},
			{Config: config("2.0.0"), Check: resource.ComposeAggregateTestCheckFunc(
				resource.TestCheckResourceAttr("omnisql_connection.slack", "version", "2.0.0"), shown("2.0.0", false))},
			{Config: config("9.9.9"), ExpectError: regexpMust(`has no version 9\.9\.9 in the catalog`)},
		},
	})
}
