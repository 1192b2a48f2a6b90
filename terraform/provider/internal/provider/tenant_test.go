package provider

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
)

func adminClient() *client {
	return newClient(os.Getenv("OMNISQL_ADMIN_URL"), os.Getenv("OMNISQL_ADMIN_KEY"))
}

// The tenant as the control plane holds it (not as the state says).
func tenantInControlPlane(id string, check func(tenantJSON) error) resource.TestCheckFunc {
	return func(*terraform.State) error {
		var t tenantJSON
		if err := adminClient().call(context.Background(), http.MethodGet, "/v1/tenants/"+id, nil, &t); err != nil {
			return err
		}
		return check(t)
	}
}

func TestAccTenant(t *testing.T) {
	config := func(name string, timeout int) string {
		return fmt.Sprintf(`
resource "omnisql_tenant" "acme" {
  id                        = "tf-acme"
  name                      = %q
  region                    = "eu"
  statement_timeout_seconds = %d
}`, name, timeout)
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: providers,
		CheckDestroy: func(*terraform.State) error {
			err := adminClient().call(context.Background(), http.MethodGet, "/v1/tenants/tf-acme", nil, nil)
			if !isNotFound(err) {
				return fmt.Errorf("the tenant outlived destroy: %v", err)
			}
			return nil
		},
		Steps: []resource.TestStep{
			{
				Config: config("Acme", 60),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("omnisql_tenant.acme", "region", "eu"),
					resource.TestCheckResourceAttr("omnisql_tenant.acme", "weight", "1"),
					resource.TestCheckResourceAttrSet("omnisql_tenant.acme", "key_id"),
					tenantInControlPlane("tf-acme", func(t tenantJSON) error {
						if t.Name != "Acme" || t.StatementTimeoutSeconds == nil || *t.StatementTimeoutSeconds != 60 {
							return fmt.Errorf("control plane holds %+v", t)
						}
						return nil
					}),
				),
			},
			// An in-place change: the same tenant, renamed, with another limit.
			{
				Config: config("Acme Corp", 30),
				Check: tenantInControlPlane("tf-acme", func(t tenantJSON) error {
					if t.Name != "Acme Corp" || *t.StatementTimeoutSeconds != 30 {
						return fmt.Errorf("control plane holds %+v", t)
					}
					return nil
				}),
			},
			// Import of an existing tenant reads back the same attributes.
			{ResourceName: "omnisql_tenant.acme", ImportState: true, ImportStateId: "tf-acme", ImportStateVerify: true},
		},
	})
}

// A tenant the control plane refuses is a diagnostic that names the field.
func TestAccTenantInvalid(t *testing.T) {
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: providers,
		Steps: []resource.TestStep{{
			Config: `
resource "omnisql_tenant" "bad" {
  id     = "Bad Id"
  name   = "x"
  region = "eu"
}`,
			ExpectError: regexpMust(`id: `),
		}},
	})
}
