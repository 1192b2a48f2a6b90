package provider

import (
	"context"
	"net/http"

	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/listplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringdefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/types"
)

// principalResource is `omnisql_principal`: a user or service account of a tenant, with a role, and the
// groups and attributes its tenant's policies match. Groups and attributes change in place (PATCH);
// every other change replaces the principal.
type principalResource struct{ client *client }

type principalModel struct {
	Tenant     types.String `tfsdk:"tenant"`
	ID         types.String `tfsdk:"id"`
	Kind       types.String `tfsdk:"kind"`
	Role       types.String `tfsdk:"role"`
	Regions    types.List   `tfsdk:"regions"`
	Groups     types.List   `tfsdk:"groups"`
	Attributes types.Map    `tfsdk:"attributes"`
}

type principalJSON struct {
	TenantID   string            `json:"tenant_id"`
	ID         string            `json:"id"`
	Kind       string            `json:"kind"`
	Role       string            `json:"role"`
	Regions    []string          `json:"regions"`
	Groups     []string          `json:"groups"`
	Attributes map[string]string `json:"attributes"`
}

func newPrincipalResource() resource.Resource { return &principalResource{} }

func (r *principalResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_principal"
}

func (r *principalResource) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	replace := []planmodifier.String{stringplanmodifier.RequiresReplace()}
	resp.Schema = schema.Schema{
		Description: "A principal of a tenant: who queries or administers it. In the platform tenant (`_platform`), a platform_operator or a data_plane_operator (a Kubernetes operator's credential, limited to `regions`).",
		Attributes: map[string]schema.Attribute{
			"tenant": schema.StringAttribute{Required: true, PlanModifiers: replace},
			"id":     schema.StringAttribute{Required: true, PlanModifiers: replace},
			"kind": schema.StringAttribute{Optional: true, Computed: true, Default: stringdefault.StaticString("user"), PlanModifiers: replace,
				Description: "user or service_account."},
			"role": schema.StringAttribute{Required: true, PlanModifiers: replace,
				Description: "tenant_admin, tenant_member, platform_operator or data_plane_operator."},
			"regions": schema.ListAttribute{ElementType: types.StringType, Optional: true,
				PlanModifiers: []planmodifier.List{listplanmodifier.RequiresReplace()},
				Description:   "For a data_plane_operator: the regions it acts in."},
			"groups": schema.ListAttribute{ElementType: types.StringType, Optional: true,
				Description: "Groups, as the tenant's policies see them (`input.context.identity.groups`)."},
			"attributes": schema.MapAttribute{ElementType: types.StringType, Optional: true,
				Description: "Attributes, as the tenant's policies see them (`input.context.principal.attributes`)."},
		},
	}
}

func (r *principalResource) Configure(_ context.Context, req resource.ConfigureRequest, _ *resource.ConfigureResponse) {
	if c, ok := req.ProviderData.(*client); ok {
		r.client = c
	}
}

func (r *principalResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan principalModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	regions := []string{}
	if !plan.Regions.IsNull() {
		resp.Diagnostics.Append(plan.Regions.ElementsAs(ctx, &regions, false)...)
	}
	groups, attributes := policyInputs(ctx, plan, &resp.Diagnostics)
	body := map[string]any{"id": plan.ID.ValueString(), "kind": plan.Kind.ValueString(), "role": plan.Role.ValueString(),
		"regions": regions, "groups": groups, "attributes": attributes}
	if err := r.client.call(ctx, http.MethodPost, "/v1/tenants/"+plan.Tenant.ValueString()+"/principals", body, nil); err != nil {
		resp.Diagnostics.AddError("Cannot create the principal", err.Error())
		return
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

func (r *principalResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var state principalModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	var found *principalJSON
	err := each(ctx, r.client, "/v1/tenants/"+state.Tenant.ValueString()+"/principals", func(p principalJSON) bool {
		if p.ID == state.ID.ValueString() {
			found = &p
		}
		return found != nil
	})
	if isNotFound(err) || (err == nil && found == nil) {
		resp.State.RemoveResource(ctx)
		return
	}
	if err != nil {
		resp.Diagnostics.AddError("Cannot read the principal", err.Error())
		return
	}
	state.Kind, state.Role = types.StringValue(found.Kind), types.StringValue(found.Role)
	if len(found.Regions) > 0 || !state.Regions.IsNull() {
		regions, diags := types.ListValueFrom(ctx, types.StringType, found.Regions)
		resp.Diagnostics.Append(diags...)
		state.Regions = regions
	}
	if len(found.Groups) > 0 || !state.Groups.IsNull() {
		groups, diags := types.ListValueFrom(ctx, types.StringType, found.Groups)
		resp.Diagnostics.Append(diags...)
		state.Groups = groups
	}
	if len(found.Attributes) > 0 || !state.Attributes.IsNull() {
		attributes, diags := types.MapValueFrom(ctx, types.StringType, found.Attributes)
		resp.Diagnostics.Append(diags...)
		state.Attributes = attributes
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
}

// Update changes groups and attributes, the only attributes that do not replace the principal.
func (r *principalResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan principalModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	groups, attributes := policyInputs(ctx, plan, &resp.Diagnostics)
	body := map[string]any{"groups": groups, "attributes": attributes}
	path := "/v1/tenants/" + plan.Tenant.ValueString() + "/principals/" + plan.ID.ValueString()
	if err := r.client.call(ctx, http.MethodPatch, path, body, nil); err != nil {
		resp.Diagnostics.AddError("Cannot update the principal", err.Error())
		return
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

// policyInputs are the plan's groups and attributes, empty when unset.
func policyInputs(ctx context.Context, plan principalModel, diags *diag.Diagnostics) ([]string, map[string]string) {
	groups, attributes := []string{}, map[string]string{}
	if !plan.Groups.IsNull() {
		diags.Append(plan.Groups.ElementsAs(ctx, &groups, false)...)
	}
	if !plan.Attributes.IsNull() {
		diags.Append(plan.Attributes.ElementsAs(ctx, &attributes, false)...)
	}
	return groups, attributes
}

func (r *principalResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var state principalModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	deleteAt(ctx, r.client, "/v1/tenants/"+state.Tenant.ValueString()+"/principals/"+state.ID.ValueString(), "principal", &resp.Diagnostics)
}

// ImportState takes `tenant/id`.
func (r *principalResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	importTenantScoped(ctx, req, resp, "id")
}
