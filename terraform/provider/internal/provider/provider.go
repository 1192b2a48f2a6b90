// Package provider implements the `omnisql` Terraform provider with the plugin framework.
package provider

import (
	"context"
	"os"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/provider"
	"github.com/hashicorp/terraform-plugin-framework/provider/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/types"
)

type omnisqlProvider struct{ version string }

type providerModel struct {
	URL    types.String `tfsdk:"url"`
	APIKey types.String `tfsdk:"api_key"`
}

// New returns the provider factory the plugin server and the acceptance tests use.
func New(version string) func() provider.Provider {
	return func() provider.Provider { return &omnisqlProvider{version: version} }
}

func (p *omnisqlProvider) Metadata(_ context.Context, _ provider.MetadataRequest, resp *provider.MetadataResponse) {
	resp.TypeName = "omnisql"
	resp.Version = p.version
}

func (p *omnisqlProvider) Schema(_ context.Context, _ provider.SchemaRequest, resp *provider.SchemaResponse) {
	resp.Schema = schema.Schema{
		Description: "OmniSQL control-plane objects, through its admin API.",
		Attributes: map[string]schema.Attribute{
			"url": schema.StringAttribute{
				Optional:    true,
				Description: "The control plane's admin API, e.g. https://cp.example.com (default: OMNISQL_ADMIN_URL).",
			},
			"api_key": schema.StringAttribute{
				Optional:    true,
				Sensitive:   true,
				Description: "An API key of the control plane (default: OMNISQL_ADMIN_KEY).",
			},
		},
	}
}

func (p *omnisqlProvider) Configure(ctx context.Context, req provider.ConfigureRequest, resp *provider.ConfigureResponse) {
	var config providerModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &config)...)
	if resp.Diagnostics.HasError() {
		return
	}
	url := config.URL.ValueString()
	if url == "" {
		url = os.Getenv("OMNISQL_ADMIN_URL")
	}
	key := config.APIKey.ValueString()
	if key == "" {
		key = os.Getenv("OMNISQL_ADMIN_KEY")
	}
	if url == "" || key == "" {
		resp.Diagnostics.AddError("Missing control-plane settings",
			"Set the provider's url and api_key, or OMNISQL_ADMIN_URL and OMNISQL_ADMIN_KEY.")
		return
	}
	c := newClient(url, key)
	resp.ResourceData = c
	resp.DataSourceData = c
}

func (p *omnisqlProvider) Resources(_ context.Context) []func() resource.Resource {
	return []func() resource.Resource{newTenantResource, newPrincipalResource, newAPIKeyResource, newEnrollmentTokenResource, newConnectionResource, newPolicyResource, newTenantOidcResource, newTenantOpaResource}
}

func (p *omnisqlProvider) DataSources(_ context.Context) []func() datasource.DataSource {
	return []func() datasource.DataSource{newDataPlanesDataSource}
}
