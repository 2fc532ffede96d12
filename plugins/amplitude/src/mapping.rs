//! Segment event → Amplitude requests: the field mapping.
//!
//! [`map_event`] turns one Segment event into the [`Part`]s to send: events
//! for `/2/httpapi`, group identifications for `/groupidentify`, user
//! mappings for `/usermap`. An event that cannot be sent is rejected here
//! with a reason, before any request.

use serde_json::{Map, Number, Value};
use switchyard_plugin_sdk::Event;
use switchyard_plugin_sdk::spec::{self, Context, Message, Properties};

use crate::settings::Config;

/// One request item made from a Segment event.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    /// An Amplitude event for `/2/httpapi`.
    Event(Map<String, Value>),
    /// One `identification` object for `/groupidentify`.
    GroupIdentify(Value),
    /// One `mapping` object for `/usermap`.
    UserMap(Value),
}

/// The reason for a local rejection when an event has no id at all.
pub const MISSING_IDS: &str = "missing userId and anonymousId/device id: Amplitude needs a user_id or a device_id";

/// Maps `event` to its parts (none for an alias when `alias_usermap` is off).
///
/// # Errors
///
/// The rejection reason when the event cannot be sent to Amplitude: no
/// usable id, an id shorter than the minimum length, a track without a
/// name, a group without a group value, an alias without both ids.
pub fn map_event(event: &Event, config: &Config) -> Result<Vec<Part>, String> {
    let (message, raw) = event.message_lenient()?;
    match message {
        Message::Track(t) => {
            let name = t.event.trim();
            if name.is_empty() {
                return Err("track has no `event` name: Amplitude requires an event_type".into());
            }
            let base = Base::new(event, config, &raw, &t.user_id, &t.anonymous_id, &t.context)?;
            Ok(track(&base, name, &t.properties, &t.integrations, config))
        }
        Message::Page(p) => {
            let base = Base::new(event, config, &raw, &p.user_id, &p.anonymous_id, &p.context)?;
            let event_type = viewed(p.name.as_deref(), "Loaded a Page");
            let mut props = p.properties.clone();
            let page = &p.context.page;
            for (key, value) in [
                ("url", &page.url),
                ("path", &page.path),
                ("referrer", &page.referrer),
                ("title", &page.title),
                ("search", &page.search),
            ] {
                if let Some(v) = value
                    && !props.contains_key(key)
                {
                    props.insert(key.into(), Value::String(v.clone()));
                }
            }
            Ok(vec![Part::Event(base.view_or_track(&event_type, &props, &p.integrations))])
        }
        Message::Screen(s) => {
            let base = Base::new(event, config, &raw, &s.user_id, &s.anonymous_id, &s.context)?;
            let event_type = viewed(s.name.as_deref(), "Loaded a Screen");
            Ok(vec![Part::Event(base.view_or_track(&event_type, &s.properties, &s.integrations))])
        }
        Message::Identify(i) => {
            let base = Base::new(event, config, &raw, &i.user_id, &i.anonymous_id, &i.context)?;
            let mut out = base.event("$identify", &i.integrations, None);
            out.remove("user_properties");
            if !i.traits.is_empty() {
                out.insert("user_properties".into(), set(i.traits.clone()));
            }
            if let Some(groups) = groups(&raw, None) {
                out.insert("groups".into(), Value::Object(groups));
            }
            Ok(vec![Part::Event(out)])
        }
        Message::Group(g) => {
            let base = Base::new(event, config, &raw, &g.user_id, &g.anonymous_id, &g.context)?;
            group(&base, &g, config)
        }
        Message::Alias(a) => {
            if !config.alias_usermap {
                return Ok(Vec::new());
            }
            let previous = non_empty(&a.previous_id).ok_or("alias has no `previousId`")?;
            let user = non_empty(&a.user_id).ok_or("alias has no `userId`")?;
            let mut mapping = Map::new();
            mapping.insert("user_id".into(), Value::String(previous.to_owned()));
            mapping.insert("global_user_id".into(), Value::String(user.to_owned()));
            Ok(vec![Part::UserMap(Value::Object(mapping))])
        }
    }
}

/// `Viewed {name}`, or `fallback` for an unnamed page or screen.
fn viewed(name: Option<&str>, fallback: &str) -> String {
    match name.map(str::trim) {
        Some(n) if !n.is_empty() => format!("Viewed {n}"),
        _ => fallback.to_owned(),
    }
}

/// `Some(s)` when `s` is set and not empty.
fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

/// `{"$set": props}`.
fn set(props: Properties) -> Value {
    let mut m = Map::new();
    m.insert("$set".into(), Value::Object(props));
    Value::Object(m)
}

/// What every Amplitude event of one Segment event shares.
struct Base<'a> {
    raw: &'a Value,
    ctx: &'a Context,
    fields: Map<String, Value>,
    message_id: &'a str,
}

impl<'a> Base<'a> {
    /// The shared fields: ids (checked), time, insert_id and the context.
    fn new(
        event: &'a Event,
        config: &Config,
        raw: &'a Value,
        user_id: &Option<String>,
        anonymous_id: &Option<String>,
        ctx: &'a Context,
    ) -> Result<Self, String> {
        let user_id = non_empty(user_id);
        let (device_id, device_source) = match non_empty(&ctx.device.id) {
            Some(id) => (Some(id), "context.device.id"),
            None => (non_empty(anonymous_id), "anonymousId"),
        };
        if user_id.is_none() && device_id.is_none() {
            return Err(MISSING_IDS.into());
        }
        let min = config.effective_min_id_length();
        for (id, what) in [(user_id, "userId"), (device_id, device_source)] {
            if let Some(id) = id {
                let n = id.chars().count();
                if n < min {
                    return Err(format!(
                        "{what} is {n} characters long, shorter than Amplitude's minimum id length of {min} \
                         (raise or lower it with the min_id_length setting)"
                    ));
                }
            }
        }
        let mut f = Map::new();
        if let Some(id) = user_id {
            f.insert("user_id".into(), id.into());
        }
        if let Some(id) = device_id {
            f.insert("device_id".into(), id.into());
        }
        f.insert("time".into(), event.timestamp_ms.into());
        f.insert("insert_id".into(), event.message_id.clone().into());
        context_fields(&mut f, ctx, raw);
        Ok(Base { raw, ctx, fields: f, message_id: &event.message_id })
    }

    /// An Amplitude event of `event_type` with the shared fields, the
    /// session id and, when given, `event_properties`. `user_properties`
    /// carries `context.traits` as `$set`.
    fn event(&self, event_type: &str, integrations: &Properties, props: Option<&Properties>) -> Map<String, Value> {
        let mut out = Map::with_capacity(self.fields.len() + 6);
        out.insert("event_type".into(), event_type.into());
        out.extend(self.fields.iter().map(|(k, v)| (k.clone(), v.clone())));
        if let Some(id) = session_id(integrations, self.raw, props) {
            out.insert("session_id".into(), id.into());
        }
        if let Some(props) = props
            && !props.is_empty()
        {
            out.insert("event_properties".into(), Value::Object(props.clone()));
        }
        if !self.ctx.traits.is_empty() {
            out.insert("user_properties".into(), set(self.ctx.traits.clone()));
        }
        out
    }

    /// A page, screen (or plain track) event: properties and groups.
    fn view_or_track(&self, event_type: &str, props: &Properties, integrations: &Properties) -> Map<String, Value> {
        let mut out = self.event(event_type, integrations, Some(props));
        if let Some(groups) = groups(self.raw, Some(props)) {
            out.insert("groups".into(), Value::Object(groups));
        }
        out
    }
}

/// Copies the device, location, app and library fields of `context`.
fn context_fields(f: &mut Map<String, Value>, ctx: &Context, raw: &Value) {
    let mut put = |key: &str, value: Option<&str>| {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            f.insert(key.into(), v.into());
        }
    };
    let device = &ctx.device;
    put("ip", ctx.ip.as_deref());
    put("app_version", ctx.app.version.as_deref());
    put("platform", platform(ctx).as_deref());
    put("os_name", ctx.os.name.as_deref());
    put("os_version", ctx.os.version.as_deref());
    let brand = raw.pointer("/context/device/brand").and_then(Value::as_str);
    put("device_brand", brand.or(device.manufacturer.as_deref()));
    put("device_manufacturer", device.manufacturer.as_deref());
    put("device_model", device.model.as_deref());
    put("carrier", ctx.network.carrier.as_deref());
    put("country", ctx.location.country.as_deref());
    put("region", ctx.location.region.as_deref());
    put("city", ctx.location.city.as_deref());
    put("language", ctx.locale.as_deref());
    let library = match (non_empty(&ctx.library.name), non_empty(&ctx.library.version)) {
        (Some(name), Some(version)) => Some(format!("{name}/{version}")),
        (Some(name), None) => Some(name.to_owned()),
        _ => None,
    };
    put("library", library.as_deref());
    match os_family(ctx) {
        Some(OsFamily::Ios) => {
            if device.ad_tracking_enabled != Some(false) {
                put("idfa", device.advertising_id.as_deref());
            }
            put("idfv", device.id.as_deref());
        }
        Some(OsFamily::Android) if device.ad_tracking_enabled != Some(false) => {
            put("adid", device.advertising_id.as_deref());
        }
        _ => {}
    }
    for (key, value) in [("location_lat", ctx.location.latitude), ("location_lng", ctx.location.longitude)] {
        if let Some(n) = value.and_then(Number::from_f64) {
            f.insert(key.into(), Value::Number(n));
        }
    }
}

/// Amplitude's `platform`: `context.device.type` (`ios` → `iOS`, `android`
/// → `Android`, others as sent), else `Web` when the event has a
/// `context.userAgent` (a browser sent it).
fn platform(ctx: &Context) -> Option<String> {
    match non_empty(&ctx.device.kind) {
        Some(kind) => Some(match kind.to_ascii_lowercase().as_str() {
            "ios" => "iOS".to_owned(),
            "android" => "Android".to_owned(),
            "web" | "browser" => "Web".to_owned(),
            _ => kind.to_owned(),
        }),
        None => non_empty(&ctx.user_agent).map(|_| "Web".to_owned()),
    }
}

enum OsFamily {
    Ios,
    Android,
}

/// iOS or Android, from `context.os.name`, else `context.device.type`.
fn os_family(ctx: &Context) -> Option<OsFamily> {
    let name = non_empty(&ctx.os.name).or(non_empty(&ctx.device.kind))?.to_ascii_lowercase();
    if name.contains("ios") || name.contains("iphone") || name.contains("ipados") {
        Some(OsFamily::Ios)
    } else if name.contains("android") {
        Some(OsFamily::Android)
    } else {
        None
    }
}

/// The session id in ms: `integrations.Amplitude.session_id` (or
/// `integrations["Actions Amplitude"].session_id`), else
/// `context.session_id`, else `properties.session_id`. A number, a numeric
/// string or an ISO timestamp; negative means none (`-1`).
fn session_id(integrations: &Properties, raw: &Value, props: Option<&Properties>) -> Option<i64> {
    let from_integrations = ["Amplitude", "Actions Amplitude"]
        .iter()
        .find_map(|k| integrations.get(*k).and_then(|v| v.get("session_id")).filter(|v| !v.is_null()));
    let value = from_integrations
        .or_else(|| raw.pointer("/context/session_id").filter(|v| !v.is_null()))
        .or_else(|| props.and_then(|p| p.get("session_id")).filter(|v| !v.is_null()))?;
    let ms = match value {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))?,
        Value::String(s) => {
            let s = s.trim();
            s.parse::<i64>().ok().or_else(|| spec::parse_timestamp_ms(s))?
        }
        _ => return None,
    };
    Some(if ms < 0 { -1 } else { ms })
}

/// `context.groups` merged with `properties.groups` (the latter wins), when
/// either is an object.
fn groups(raw: &Value, props: Option<&Properties>) -> Option<Map<String, Value>> {
    let mut out = Map::new();
    if let Some(Value::Object(g)) = raw.pointer("/context/groups") {
        out.extend(g.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    if let Some(Value::Object(g)) = props.and_then(|p| p.get("groups")) {
        out.extend(g.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    (!out.is_empty()).then_some(out)
}

/// A number from a JSON number or a numeric string.
fn number(v: Option<&Value>) -> Option<f64> {
    match v? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|f| f.is_finite())
}

/// A JSON number from a JSON number (kept exactly) or a numeric string.
fn json_number(v: Option<&Value>) -> Option<Value> {
    match v? {
        Value::Number(n) => Some(Value::Number(n.clone())),
        other => number(Some(other)).and_then(Number::from_f64).map(Value::Number),
    }
}

/// A string from the first of `keys` that is a string or a number.
fn text(props: &Properties, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|k| match props.get(*k)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

/// A track: the event itself plus, with `track_products`, one `Product
/// Purchased` event per object of `properties.products`.
///
/// Revenue is counted once, on the order or on its products, never on both
/// (Segment's Amplitude "Log Purchase", whose *Track Revenue Per Product*
/// is off by default):
///
/// - By default the track carries the order's revenue fields: `revenue`
///   (`properties.revenue`, else `properties.total` for `Order Completed`),
///   `price`, `quantity`, `productId` and `revenueType` (default `Purchase`
///   when a revenue or price is sent). The product events carry none of
///   them (a product's `price` stays in its `event_properties`, which are
///   not revenue fields).
/// - With `track_revenue_per_product`, when product events are emitted and
///   at least one product has a `price`, the product events carry the
///   revenue fields (see [`product_revenue`]) and the track none of them.
///   When no product has a price the track keeps its revenue fields as by
///   default.
///
/// Where Segment differs or is silent: with per-product revenue Segment
/// takes revenue off the order whenever it has products, priced or not;
/// here an order whose products have no price keeps its revenue, so it is
/// not lost. By default product prices are not added up into the order's
/// revenue (nor are they in Segment): an order without `revenue` (or
/// `total`) counts none. The `total` fallback is this plugin's; Segment's
/// mapping reads `properties.revenue` only.
fn track(base: &Base, name: &str, props: &Properties, integrations: &Properties, config: &Config) -> Vec<Part> {
    let mut main = base.view_or_track(name, props, integrations);
    let products: Vec<(usize, &Properties)> = if config.track_products {
        props
            .get("products")
            .and_then(Value::as_array)
            .map(|a| a.iter().enumerate().filter_map(|(i, p)| Some((i, p.as_object()?))).collect())
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let per_product =
        config.track_revenue_per_product && products.iter().any(|(_, p)| number(p.get("price")).is_some());
    let order_revenue_type = text(props, &["revenueType", "revenue_type"]);
    if !per_product {
        let mut revenue = json_number(props.get("revenue"));
        if revenue.is_none() && name == "Order Completed" {
            revenue = json_number(props.get("total"));
        }
        let price = json_number(props.get("price"));
        let has_revenue = revenue.is_some() || price.is_some();
        if let Some(r) = revenue {
            main.insert("revenue".into(), r);
        }
        if let Some(p) = price {
            main.insert("price".into(), p);
        }
        if let Some(q) = quantity(props) {
            main.insert("quantity".into(), q.into());
        }
        if let Some(id) = text(props, &["productId", "product_id", "sku"]) {
            main.insert("productId".into(), id.into());
        }
        if has_revenue {
            let kind = order_revenue_type.clone().unwrap_or_else(|| "Purchase".to_owned());
            main.insert("revenueType".into(), kind.into());
        }
    }
    let mut parts = vec![Part::Event(main)];
    for (i, product) in products {
        let mut out = base.event("Product Purchased", integrations, Some(product));
        out.insert("insert_id".into(), format!("{}-product-{i}", base.message_id).into());
        if let Some(groups) = groups(base.raw, Some(props)) {
            out.insert("groups".into(), Value::Object(groups));
        }
        if config.track_revenue_per_product {
            product_revenue(&mut out, product, order_revenue_type.as_deref());
        }
        parts.push(Part::Event(out));
    }
    parts
}

/// Adds a product's revenue fields to its `Product Purchased` event (with
/// `track_revenue_per_product` only): `price`, `quantity` (default 1 when
/// a price is set), `productId` (`product_id`, `productId`, `sku` or `id`)
/// and `revenueType` (the product's, else the order's, else `Purchase`).
fn product_revenue(out: &mut Map<String, Value>, product: &Properties, order_revenue_type: Option<&str>) {
    if let Some(price) = json_number(product.get("price")) {
        out.insert("price".into(), price);
        out.insert("quantity".into(), quantity(product).unwrap_or(1).into());
    } else if let Some(q) = quantity(product) {
        out.insert("quantity".into(), q.into());
    }
    if let Some(id) = text(product, &["product_id", "productId", "sku", "id"]) {
        out.insert("productId".into(), id.into());
    }
    let kind = text(product, &["revenueType", "revenue_type"])
        .or_else(|| order_revenue_type.map(str::to_owned))
        .unwrap_or_else(|| "Purchase".to_owned());
    out.insert("revenueType".into(), kind.into());
}

/// `quantity` as the integer Amplitude requires (rounded).
fn quantity(props: &Properties) -> Option<i64> {
    number(props.get("quantity")).map(|q| q.round() as i64)
}

/// A scalar trait as a string (group types and values are strings).
fn trait_text(traits: &Properties, key: Option<&str>) -> Option<String> {
    match traits.get(key?)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A group: the group's properties for `/groupidentify` and a `$identify`
/// that puts the user in the group.
fn group(base: &Base, g: &spec::Group, config: &Config) -> Result<Vec<Part>, String> {
    let group_type =
        trait_text(&g.traits, config.group_type_trait.as_deref()).unwrap_or_else(|| config.default_group_type.clone());
    let group_value = trait_text(&g.traits, config.group_value_trait.as_deref())
        .or_else(|| non_empty(&g.group_id).map(str::to_owned))
        .ok_or("group has no `groupId` (and no group value trait): Amplitude needs a group value")?;
    let mut identification = Map::new();
    identification.insert("group_type".into(), group_type.clone().into());
    identification.insert("group_value".into(), group_value.clone().into());
    identification.insert("group_properties".into(), Value::Object(g.traits.clone()));
    let mut identify = base.event("$identify", &g.integrations, None);
    identify.remove("user_properties");
    let mut groups = Map::new();
    groups.insert(group_type, group_value.into());
    identify.insert("groups".into(), Value::Object(groups));
    Ok(vec![Part::GroupIdentify(Value::Object(identification)), Part::Event(identify)])
}
